"""The fine-tune Job manifest: valid against the upstream Kubernetes schema (strict: no
unknown field), the platform's GPU scheduling, secrets by reference, a non-root pod."""

import shlex

import pytest
import yaml
from typer.testing import CliRunner

from agentcycle.cli.main import app
from agentcycle.errors import ConfigError
from agentcycle.finetune.k8s import FinetuneJob, finetune_job_manifest, manifest_yaml

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="dev dependency kubernetes-validate (bundled k8s schemas)")
K8S = "1.33"  # a Kubernetes release the platform runs (k8s 1.33+ has every field used)


def validate(manifest: dict) -> None:
    kubernetes_validate.validate(manifest, K8S, strict=True)


def job(**changes) -> FinetuneJob:
    fields = dict(name="legal-tune", data="legal/train.jsonl", out="models/legal-tuned",
                  image="registry.example.com/thinkube/agentcycle-gpu:0.4.0",
                  finetune_args=["--max-steps", "200"])
    return FinetuneJob(**{**fields, **changes})


def test_job_is_valid_and_runs_on_a_gpu_node():
    manifest = finetune_job_manifest(job(register_as="legal", namespace="agents"))
    validate(manifest)
    spec = manifest["spec"]
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"],
            spec["ttlSecondsAfterFinished"]) == (1, 21600, 86400)
    pod = spec["template"]["spec"]
    [container] = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 1
    [term] = (pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
              ["nodeSelectorTerms"][0]["matchExpressions"])
    assert term == {"key": "nvidia.com/gpu.memory", "operator": "Gt", "values": ["20479"]}
    assert {"key": "nvidia.com/gpu", "operator": "Exists",
            "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["priorityClassName"] == "thinkube-workload"
    assert pod["imagePullSecrets"] == [{"name": "app-pull-secret"}]

    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}

    # MLflow credentials by reference only: no secret value in the manifest.
    assert container["envFrom"] == [{"secretRef": {"name": "agentcycle-mlflow"}}]
    assert not [e for e in container["env"] if "MLFLOW" in e["name"]]

    shell, flag, script = container["command"]
    assert (shell, flag) == ("sh", "-c")
    train, register = (shlex.split(part) for part in script.split(" && "))
    assert train == ["agentcycle", "finetune", "/data/legal/train.jsonl", "--out",
                     "/data/models/legal-tuned", "--max-steps", "200", "--resume"]
    assert register == ["agentcycle", "registry", "register", "/data/models/legal-tuned",
                        "--name", "legal"]
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]
              if "persistentVolumeClaim" in v]
    assert claims == ["agentcycle-data"]


def test_a_retried_pod_resumes_the_checkpoints_of_the_one_before():
    """backoffLimit retries the pod on the same volume, where `finetune` without --resume
    refuses the first pod's checkpoints: the command resumes, unless the user chose."""
    def train_args(finetune_args: list[str]) -> list[str]:
        [container] = finetune_job_manifest(job(finetune_args=finetune_args))[
            "spec"]["template"]["spec"]["containers"]
        return container["command"]

    assert train_args([])[-1] == "--resume"
    assert train_args(["--overwrite"]).count("--resume") == 0
    assert train_args(["--no-resume"]).count("--resume") == 0


def test_the_schema_check_catches_mistakes():
    manifest = finetune_job_manifest(job())
    manifest["spec"]["template"]["spec"]["containers"][0]["gpus"] = 1  # not a field
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(manifest)


def test_cpu_only_job_and_tracking_uri_without_secret():
    manifest = finetune_job_manifest(job(gpus=0, mlflow_secret=None,
                                         mlflow_tracking_uri="http://mlflow.mlflow:5000"))
    validate(manifest)
    pod = manifest["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert "affinity" not in pod and "tolerations" not in pod and "envFrom" not in container
    assert {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow.mlflow:5000"} in container["env"]
    assert container["command"][:2] == ["agentcycle", "finetune"]


@pytest.mark.parametrize("changes, message", [
    ({"name": "Legal_Tune"}, "bad job name"),
    ({"name": "x" * 53}, "bad job name"),
    ({"image": ""}, "bad image"),
    ({"gpu_memory": "20GB"}, "bad gpu memory"),
    ({"gpu_memory": "20G"}, "Mi, Gi or Ti"),
    ({"memory": "lots"}, "bad memory"),
    ({"gpus": -1}, "gpus must be"),
    ({"data": "../../etc/passwd"}, "leave the volume"),
    ({"ttl_s": 0}, "bad ttl"),
    ({"pvc": "Bad PVC"}, "bad PVC name"),
    # `registry register` refuses it: the Job would fail after its GPU hours
    ({"register_as": "models:/legal"}, "a name, not a models:/ URI"),
])
def test_bad_fields_are_one_clear_error(changes, message):
    with pytest.raises(ConfigError, match=message):
        finetune_job_manifest(job(**changes))


def test_unknown_field_is_one_clear_error():
    with pytest.raises(ConfigError, match="unexpected keyword argument 'gpu'"):
        finetune_job_manifest(name="x", data="d", out="o", image="i", gpu=1)


def test_cli_writes_a_valid_manifest(tmp_path):
    out = tmp_path / "k8s" / "job.yaml"
    result = CliRunner().invoke(app, [
        "finetune-job", "legal/train.jsonl", "--model-out", "models/legal-tuned",
        "--image", "registry.example.com/thinkube/agentcycle-gpu:0.4.0", "--name", "legal-tune",
        "--gpu-memory", "40Gi", "--register", "legal", "--finetune-args", "--max-steps 50",
        "--out", out])
    assert result.exit_code == 0, result.output
    manifest = yaml.safe_load(out.read_text())
    validate(manifest)
    assert manifest == finetune_job_manifest(job(gpu_memory="40Gi", register_as="legal",
                                                 finetune_args=["--max-steps", "50"]))
    assert manifest_yaml(manifest) == out.read_text()

    result = CliRunner().invoke(app, ["finetune-job", "d.jsonl", "--model-out", "m",
                                      "--image", "img:1", "--finetune-args", "'unclosed"])
    assert result.exit_code == 1 and result.output.count("error:") == 1
    assert "--finetune-args" in result.output
