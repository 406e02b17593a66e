"""k8s/ from thinkube.yaml: the platform's file set, valid for the cluster (core kinds
against the Kubernetes schemas, custom resources against the upstream CRD schemas read
from ../shared/schemas/crds, kubectl kustomize), deterministic, secrets by reference
only, and replaced atomically."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from agentcycle.deploy import (
    DeployTarget,
    ManifestError,
    generate_manifests,
    kustomize_build,
    manifests_for,
    parse_thinkube,
    referenced_secrets,
    validate_manifests,
    write_manifests,
)
from agentcycle.errors import ConfigError
from test_deploy_thinkube import AGENT, SAMPLE_FILES

CRDS = Path(__file__).resolve().parents[2] / "shared/schemas/crds"
CRD_FILES = {
    ("argoproj.io/v1alpha1", "Application"): "argoproj.io_application_v1alpha1.json",
    ("argoproj.io/v1alpha1", "WorkflowTemplate"): "argoproj.io_workflowtemplate_v1alpha1.json",
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): "gateway.networking.k8s.io_httproute_v1.json",
    ("serving.knative.dev/v1", "Service"): "serving.knative.dev_service_v1.json",
}
needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl missing")
TARGET = DeployTarget(app_name="legal-agent", domain="thinkube.example",
                      image_tag="3f2a9c1d0b7e", parameters={"model_id": "smollm2-135m"})
KNATIVE = """\
apiVersion: thinkube.io/v1
kind: ThinkubeDeployment
spec:
  deployment: {type: knative, minScale: 0, maxScale: 3, containerConcurrency: 8,
               timeoutSeconds: 600}
  containers:
    - {name: agent, build: ., port: 8000, health: /health, size: medium}
  dependencies:
    - {name: litellm, type: llm-proxy, env: LITELLM_ENDPOINT}
"""
SPECS = {p.name.split(".")[0]: p.read_text() for p in SAMPLE_FILES}
SPECS |= {"agent": AGENT, "knative-agent": KNATIVE}
# The agent templates we ship (issue 10): their thinkube.yaml must deploy as they are.
TEMPLATES = Path(__file__).resolve().parents[1] / "src/agentcycle/templates/sources"
SPECS |= {p.parent.name: p.read_text() for p in sorted(TEMPLATES.glob("*/thinkube.yaml"))}


def _objects(files: dict[str, str]) -> list[tuple[str, dict]]:
    return [(name, doc) for name, text in files.items()
            for doc in yaml.safe_load_all(text) if doc]


def _project(tmp_path: Path, text: str = AGENT) -> Path:
    project = tmp_path / "app"
    project.mkdir()
    (project / "thinkube.yaml").write_text(text)
    return project


@pytest.fixture(scope="module")
def crd_schemas() -> dict[tuple[str, str], dict]:
    if not CRDS.is_dir():
        pytest.skip(f"no upstream CRD schemas in {CRDS}")
    return {kind: json.loads((CRDS / name).read_text()) for kind, name in CRD_FILES.items()}


@needs_kubectl
@pytest.mark.parametrize("name", SPECS)
def test_each_spec_generates_a_valid_file_set(name, crd_schemas):
    files = manifests_for(parse_thinkube(SPECS[name]), TARGET)
    validate_manifests(files)  # kubernetes-validate, our CR models, kustomize, secrets
    expected = {"namespace.yaml", "resource-policies.yaml", "build-workflow.yaml",
                "kustomization.yaml", "argocd-postsync-hook.yaml",
                "argocd-syncfail-hook.yaml", "argocd-application.yaml"}
    workloads = ({"knative-service.yaml"} if name.startswith("knative")
                 else {"deployments.yaml", "services.yaml", "ingress.yaml"})
    assert expected | workloads <= set(files)
    checked = 0
    for file, obj in _objects(files):
        schema = crd_schemas.get((obj["apiVersion"], obj["kind"]))
        if schema is not None:
            errors = [f"{file}: {'.'.join(map(str, e.path))}: {e.message}"
                      for e in jsonschema.Draft7Validator(schema).iter_errors(obj)]
            assert not errors, errors
            checked += 1
        labels = obj.get("metadata", {}).get("labels", {})
        if obj["kind"] != "Kustomization":
            assert labels.get("app.kubernetes.io/name") == "legal-agent", file
    assert checked == 3  # the Application, the WorkflowTemplate, the HTTPRoute or ksvc
    assert ":latest" not in "".join(files.values())


def test_crd_schemas_are_strict_enough_to_catch_a_typo(crd_schemas):
    files = manifests_for(parse_thinkube(AGENT), TARGET)
    route = yaml.safe_load(files["ingress.yaml"].split("\n", 1)[1])
    route["spec"]["rules"][0]["backendRef"] = route["spec"]["rules"][0].pop("backendRefs")
    schema = crd_schemas[("gateway.networking.k8s.io/v1", "HTTPRoute")]
    assert list(jsonschema.Draft7Validator(schema).iter_errors(route))


def test_output_is_deterministic(tmp_path):
    project = _project(tmp_path)
    first = generate_manifests(project, TARGET)
    shuffled = TARGET.model_copy(update={"parameters": dict(reversed(
        {"b_param": 2, **TARGET.parameters}.items()))})
    ordered = TARGET.model_copy(update={"parameters": {**TARGET.parameters, "b_param": 2}})
    assert generate_manifests(project, TARGET) == first
    assert list(first) == sorted(first)
    assert generate_manifests(project, shuffled) == generate_manifests(project, ordered)


def test_output_is_byte_identical_across_processes(tmp_path):
    project = _project(tmp_path)
    code = ("import hashlib, json, sys; from pathlib import Path; "
            "from agentcycle.deploy import DeployTarget, generate_manifests; "
            "t = DeployTarget(app_name='legal-agent', domain='thinkube.example', "
            "image_tag='abc', parameters={'b': 1, 'a': 2}); "
            "f = generate_manifests(Path(sys.argv[1]), t); "
            "print(hashlib.sha256(json.dumps(f).encode()).hexdigest())")
    digests = {subprocess.run([sys.executable, "-c", code, str(project)], check=True,
                              capture_output=True, text=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}).stdout
               for seed in ("1", "2")}
    assert len(digests) == 1


def _deployment(files: dict[str, str], name: str) -> dict:
    return next(o for _, o in _objects(files) if o["kind"] == "Deployment"
                and o["metadata"]["name"] == name)


def test_agent_env_images_and_probes():
    files = manifests_for(parse_thinkube(AGENT), TARGET)
    pod = _deployment(files, "legal-agent-agent")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    values = {k: e.get("value") for k, e in env.items()}
    assert values["LITELLM_ENDPOINT"] == "http://litellm.litellm.svc.cluster.local:4000"
    assert values["QDRANT_URL"].endswith(":6333") and values["NATS_URL"].startswith("nats://")
    assert values["MODEL_ID"] == "smollm2-135m"  # a parameter, upper-cased
    assert values["AGENT_MODEL"] == "gpt-4o-mini"  # a spec.env default
    assert (values["APP_NAME"], values["DOMAIN_NAME"], values["CONTAINER_REGISTRY"]) == (
        "legal-agent", "thinkube.example", "registry.thinkube.example")
    for secret in ("LITELLM_MASTER_KEY", "QDRANT_API_KEY", "MLFLOW_TRACKING_PASSWORD"):
        assert env[secret]["valueFrom"]["secretKeyRef"]["name"] == "legal-agent-platform"
    assert container["envFrom"] == [{"secretRef": {"name": "legal-agent-env",
                                                   "optional": True}}]
    assert container["image"] == "registry.thinkube.example/thinkube/legal-agent-agent:3f2a9c1d0b7e"
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": 8000}
    assert container["resources"]["limits"]["memory"] == "512Mi"  # size: medium
    assert pod["imagePullSecrets"] == [{"name": "app-pull-secret"}]
    assert pod["priorityClassName"] == "thinkube-workload"
    kustomization = yaml.safe_load(files["kustomization.yaml"])
    assert kustomization["images"] == [{"name": "registry.thinkube.example/thinkube/"
                                                "legal-agent-agent", "newTag": "3f2a9c1d0b7e"}]
    assert "argocd-application.yaml" not in kustomization["resources"]
    build = yaml.safe_load(files["build-workflow.yaml"])
    tasks = build["spec"]["templates"][0]["dag"]["tasks"]
    assert tasks == [{"name": "test-agent", "template": "test-agent"},
                     {"name": "build-agent", "template": "build-agent", "depends": "test-agent"}]
    assert build["metadata"]["labels"]["thinkube.io/trigger"] == "webhook"


@pytest.mark.skipif(not SAMPLE_FILES, reason="no platform samples")
def test_gpu_sample_schedules_on_a_big_enough_gpu():
    vllm = next(p for p in SAMPLE_FILES if "vllm" in p.name)
    files = manifests_for(parse_thinkube(vllm.read_text()), TARGET)
    deployment = _deployment(files, "legal-agent-inference")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    term = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] == ["20479"]
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert deployment["spec"]["progressDeadlineSeconds"] == 1800
    assert "legal-agent-model-cache" in files["storage-pvc.yaml"]
    quota = yaml.safe_load_all(files["resource-policies.yaml"])
    assert [q for q in quota if q["kind"] == "ResourceQuota"][0]["spec"]["hard"][
        "requests.nvidia.com/gpu"] == "1"


@needs_kubectl
def test_kustomize_pins_the_images():
    built = list(yaml.safe_load_all(kustomize_build(manifests_for(parse_thinkube(AGENT),
                                                                  TARGET))))
    images = {c["image"] for o in built if o["kind"] == "Deployment"
              for c in o["spec"]["template"]["spec"]["containers"]}
    assert images == {"registry.thinkube.example/thinkube/legal-agent-agent:3f2a9c1d0b7e"}
    assert not [o for o in built if o["kind"] == "Application"]


@needs_kubectl
def test_a_commit_tag_that_reads_as_a_number_stays_a_string():
    # A short SHA such as 12e4567 is a float to YAML 1.2 (kustomize); CI hit one.
    target = TARGET.model_copy(update={"image_tag": "12e4567"})
    files = manifests_for(parse_thinkube(AGENT), target)
    assert "newTag: '12e4567'" in files["kustomization.yaml"]
    built = list(yaml.safe_load_all(kustomize_build(files)))
    images = {c["image"] for o in built if o["kind"] == "Deployment"
              for c in o["spec"]["template"]["spec"]["containers"]}
    assert images == {"registry.thinkube.example/thinkube/legal-agent-agent:12e4567"}


def _with(files: dict[str, str], name: str, edit) -> dict[str, str]:
    docs = [d for d in yaml.safe_load_all(files[name]) if d]
    edit(docs)
    return {**files, name: yaml.safe_dump_all(docs, sort_keys=False)}


def _env(docs, entry):
    docs[0]["spec"]["template"]["spec"]["containers"][0]["env"].append(entry)


BROKEN = {
    "a Secret with data": ("namespace.yaml", lambda d: d.append(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
         "stringData": {"password": "hunter2"}}),
        "k8s/namespace.yaml: Secret/db: a Secret with values would be committed"),
    "a password as a value": ("deployments.yaml", lambda d: _env(
        d, {"name": "POSTGRES_PASSWORD", "value": "hunter2"}),
        "Deployment/legal-agent-agent: spec.template.spec.containers[0].env[14] "
        "(POSTGRES_PASSWORD): a credential as a plain value"),
    "a URL with a password": ("deployments.yaml", lambda d: _env(
        d, {"name": "CACHE_URL", "value": "redis://default:s3cret@valkey:6379"}),
        "containers[0].env[14].value: looks like a URL with a password"),
    "an unknown field": ("deployments.yaml", lambda d: d[0]["spec"].update(replica=2),
                         "k8s/deployments.yaml: Deployment/legal-agent-agent: spec: "
                         "Additional properties are not allowed ('replica' was unexpected)"),
    "a wrong type": ("services.yaml", lambda d: d[0]["spec"]["ports"][0].update(port="x"),
                     "k8s/services.yaml: Service/agent: spec.ports.0.port: 'x' is not"),
    "a route without a port": ("ingress.yaml", lambda d: d[0]["spec"]["rules"][0][
        "backendRefs"][0].pop("port"),
        "k8s/ingress.yaml: HTTPRoute/legal-agent: spec.rules.0.backendRefs.0.port: "
        "Field required"),
    "a task with no template": ("build-workflow.yaml", lambda d: d[0]["spec"]["templates"][0][
        "dag"]["tasks"][0].update(template="nope"),
        "WorkflowTemplate/legal-agent-build: spec: task 'test-agent' runs template 'nope'"),
    "a bad container in a CR": ("build-workflow.yaml", lambda d: d[0]["spec"]["templates"][1][
        "container"].update(imagePullPolicy=3),
        "WorkflowTemplate/legal-agent-build: spec.templates[1].container.imagePullPolicy"),
    "an unknown kind": ("namespace.yaml", lambda d: d.append(
        {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}),
        "Widget/w: example.com/v1 Widget is not a kind Kubernetes 1.33 knows"),
}


@pytest.mark.parametrize("case", BROKEN, ids=list(BROKEN))
def test_broken_manifests_name_file_object_and_field(case):
    name, edit, message = BROKEN[case]
    files = _with(manifests_for(parse_thinkube(AGENT), TARGET), name, edit)
    with pytest.raises(ManifestError) as info:
        validate_manifests(files, kustomize=False)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_a_credential_in_thinkube_yaml_never_reaches_git():
    key = "sk-abcdefghijklmnopqrstuv"
    for text, line, field in (
            (AGENT.replace("      health: /health", "      health: /health\n      environment:\n"
                           f"        - {{name: OPENAI_API_KEY, value: {key}}}"),
             15, "spec.containers.0.environment.0.value: OPENAI_API_KEY: a credential"),
            (AGENT.replace("default: gpt-4o-mini", "default: postgres://u:pw@db/x"),
             26, "spec.env.0.default: AGENT_MODEL: looks like a URL with a password")):
        with pytest.raises(ConfigError) as info:
            parse_thinkube(text)
        assert str(info.value).startswith(f"thinkube.yaml:{line}: {field}"), str(info.value)
        assert "would be committed to git" in str(info.value)


def test_the_secrets_the_cluster_must_hold_are_listed():
    files = manifests_for(parse_thinkube(AGENT.replace("  env:", "  services: [database]\n"
                                                                   "  env:")), TARGET)
    secrets = referenced_secrets(files)
    assert secrets[("legal-agent", "legal-agent-platform")] == [
        "LITELLM_MASTER_KEY", "MLFLOW_AUTH_PASSWORD", "MLFLOW_AUTH_USERNAME", "QDRANT_API_KEY"]
    assert "POSTGRES_PASSWORD" in secrets[("legal-agent", "legal-agent-db-credentials")]
    assert secrets[("argo", "gitea-credentials")] == ["token", "username"]
    assert {("legal-agent", "app-pull-secret"), ("legal-agent", "legal-agent-env"),
            ("argo", "harbor-docker-config")} <= set(secrets)


@needs_kubectl
def test_kustomize_failures_and_a_missing_kubectl(monkeypatch):
    files = manifests_for(parse_thinkube(AGENT), TARGET)
    broken = {k: v for k, v in files.items() if k != "services.yaml"}
    with pytest.raises(ManifestError, match="k8s/kustomization.yaml: kubectl kustomize "
                                            "failed: .*services.yaml"):
        validate_manifests(broken)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ManifestError, match="kubectl is not installed"):
        validate_manifests(files)


def test_unknown_dependency_and_type_none():
    text = AGENT.replace("type: messaging", "type: graph-db").replace("name: nats", "name: neo")
    with pytest.raises(ConfigError, match="dependency 'neo' \\(type 'graph-db'\\) is not a "
                                          "service agentcycle knows"):
        manifests_for(parse_thinkube(text), TARGET)
    target = TARGET.model_copy(update={"service_urls": {"neo": "bolt://neo4j.db:7687"}})
    files = manifests_for(parse_thinkube(text), target)
    assert "bolt://neo4j.db:7687" in files["deployments.yaml"]
    with pytest.raises(ConfigError, match="'none': nothing to deploy"):
        manifests_for(parse_thinkube(AGENT.replace("type: app", "type: none")), TARGET)


def test_write_replaces_k8s_and_keeps_the_build_adapters_tag(tmp_path):
    project = _project(tmp_path)
    files = generate_manifests(project, TARGET)
    from agentcycle.deploy.manifests import dump_yaml

    # a file an older thinkube.yaml generated (our header) goes when it is not generated
    k8s = write_manifests(project, {**files, "stale.yaml": dump_yaml([{"kind": "Stale"}])})
    (k8s / ".argocd-source-legal-agent.yaml").write_text("kustomize: {images: []}\n")
    write_manifests(project, files)
    assert sorted(p.name for p in k8s.iterdir()) == sorted(
        [*files, ".argocd-source-legal-agent.yaml"])
    assert (k8s / "deployments.yaml").read_text() == files["deployments.yaml"]
    assert sorted(p.name for p in project.iterdir()) == ["k8s", "thinkube.yaml"]


def test_a_failed_write_leaves_the_previous_k8s(tmp_path):
    project = _project(tmp_path)
    files = generate_manifests(project, TARGET)
    write_manifests(project, files)
    before = {p.name: p.read_text() for p in (project / "k8s").iterdir()}
    # "a.yaml" is written as a file, then "a.yaml/b.yaml" needs it to be a folder.
    with pytest.raises(OSError):
        write_manifests(project, {"a.yaml": "x: 1\n", "a.yaml/b.yaml": "x: 2\n"})
    assert {p.name: p.read_text() for p in (project / "k8s").iterdir()} == before
    assert sorted(os.listdir(project)) == ["k8s", "thinkube.yaml"]
    with pytest.raises(ConfigError, match="inside k8s/"):
        write_manifests(project, {"../escape.yaml": "x: 1\n"})
