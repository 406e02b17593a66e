"""A Kubernetes Job that runs ``agentcycle finetune`` on a Thinkube GPU node.

It follows the platform's conventions (docs in ``thinkube-deploy.md``): the GPU as an
``nvidia.com/gpu`` limit with node affinity on the ``nvidia.com/gpu.memory`` label,
``priorityClassName: thinkube-workload``, ``imagePullSecrets: app-pull-secret``. Unlike
the platform's generator, the MLflow credentials come from a Secret by reference
(``envFrom``), never as values in the manifest. Data and output live on a PVC; the
merged model can be registered in MLflow's registry as the Job's last step.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from agentcycle.errors import ConfigError

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_QUANTITY = re.compile(r"^\d+(\.\d+)?(Ki|Mi|Gi|Ti|k|M|G|T|m)?$")
_BINARY = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024 * 1024}


@dataclass
class FinetuneJob:
    """What the Job runs and where; defaults fit a 1-GPU Thinkube node."""

    name: str
    data: str  # the training JSONL, relative to the PVC (or an absolute path in the image)
    out: str  # the merged model's folder, same convention
    image: str
    finetune_args: list[str] = field(default_factory=list)  # e.g. ["--max-steps", "200"]
    register_as: str | None = None  # register the model under this name when training ends
    namespace: str | None = None
    gpus: int = 1
    gpu_memory: str | None = "20Gi"  # the node must have at least this much per GPU
    cpu: str = "4"
    memory: str = "16Gi"
    memory_limit: str = "32Gi"
    pvc: str = "agentcycle-data"
    mount_path: str = "/data"
    mlflow_secret: str | None = "agentcycle-mlflow"  # holds MLFLOW_TRACKING_URI, MLFLOW_AUTH_*
    mlflow_tracking_uri: str | None = None  # when the Secret does not hold it
    pull_secret: str | None = "app-pull-secret"
    priority_class: str | None = "thinkube-workload"
    backoff_limit: int = 1
    deadline_s: int = 6 * 3600
    ttl_s: int = 24 * 3600
    run_as_user: int = 1000

    def check(self) -> None:
        if len(self.name) > 52 or not _DNS_LABEL.match(self.name):
            # 52: the Job controller appends a suffix to name the pods (63 at most).
            raise ConfigError(f"bad job name '{self.name}': lower-case letters, digits and "
                              "'-', at most 52 characters")
        if self.namespace and not _DNS_LABEL.match(self.namespace):
            raise ConfigError(f"bad namespace '{self.namespace}'")
        if not self.image or any(c.isspace() for c in self.image):
            raise ConfigError(f"bad image '{self.image}'")
        if len(self.pvc) > 253 or not all(_DNS_LABEL.match(p) for p in self.pvc.split(".")):
            raise ConfigError(f"bad PVC name '{self.pvc}': lower-case letters, digits, '-' "
                              "and '.'")
        if self.register_as is not None and not re.fullmatch(r"[\w.-]+", self.register_as):
            # the same rule as `registry register`: found only after the GPU hours, else
            raise ConfigError(f"bad model name to register '{self.register_as}': letters, "
                              "digits, '_', '-', '.' only (a name, not a models:/ URI)")
        if self.gpus < 0:
            raise ConfigError(f"gpus must be >= 0 (got {self.gpus})")
        for label, value in (("cpu", self.cpu), ("memory", self.memory),
                             ("memory limit", self.memory_limit),
                             ("gpu memory", self.gpu_memory or "0")):
            if not _QUANTITY.match(value):
                raise ConfigError(f"bad {label} '{value}': a Kubernetes quantity such as "
                                  "'4', '500m' or '16Gi'")
        if self.gpu_memory and self.gpu_memory[-2:] not in _BINARY:
            raise ConfigError(f"bad gpu memory '{self.gpu_memory}': write it in Mi, Gi or Ti")
        for label, value in (("backoff limit", self.backoff_limit),
                             ("deadline", self.deadline_s), ("ttl", self.ttl_s)):
            if value < (0 if label == "backoff limit" else 1):
                raise ConfigError(f"bad {label}: {value}")


def finetune_job_manifest(job: FinetuneJob | None = None, /, **fields: Any) -> dict[str, Any]:
    """The batch/v1 Job as a dict (``yaml.safe_dump`` it, or apply it with a client); give a
    FinetuneJob or its fields (``name=, data=, out=, image=`` ...)."""
    if job is None:
        try:
            job = FinetuneJob(**fields)
        except TypeError as exc:
            raise ConfigError(f"finetune job: {exc}") from None
    job.check()
    labels = {"app.kubernetes.io/name": "agentcycle-finetune",
              "app.kubernetes.io/instance": job.name,
              "app.kubernetes.io/component": "finetune",
              "app.kubernetes.io/managed-by": "agentcycle"}
    metadata: dict[str, Any] = {"name": job.name, "labels": labels}
    if job.namespace:
        metadata["namespace"] = job.namespace
    pod: dict[str, Any] = {
        "restartPolicy": "Never",  # the Job's backoffLimit retries, not the kubelet
        "securityContext": {"runAsNonRoot": True, "runAsUser": job.run_as_user,
                            "runAsGroup": job.run_as_user, "fsGroup": job.run_as_user,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [_container(job)],
        "volumes": [
            {"name": "data", "persistentVolumeClaim": {"claimName": job.pvc}},
            {"name": "tmp", "emptyDir": {}},
            # PyTorch's data loader workers share tensors through /dev/shm (64Mi by default).
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}},
        ],
    }
    if job.priority_class:
        pod["priorityClassName"] = job.priority_class
    if job.pull_secret:
        pod["imagePullSecrets"] = [{"name": job.pull_secret}]
    if job.gpus:
        pod["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists",
                               "effect": "NoSchedule"}]
        if job.gpu_memory:
            pod["affinity"] = _gpu_affinity(job.gpu_memory)
    return {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": metadata,
        "spec": {"backoffLimit": job.backoff_limit, "activeDeadlineSeconds": job.deadline_s,
                 "ttlSecondsAfterFinished": job.ttl_s,
                 "template": {"metadata": {"labels": dict(labels)}, "spec": pod}},
    }


def _container(job: FinetuneJob) -> dict[str, Any]:
    resources: dict[str, dict[str, Any]] = {
        "requests": {"cpu": job.cpu, "memory": job.memory},
        "limits": {"memory": job.memory_limit},
    }
    if job.gpus:  # an extended resource: requests must equal limits
        resources["requests"]["nvidia.com/gpu"] = job.gpus
        resources["limits"]["nvidia.com/gpu"] = job.gpus
    env = [{"name": "AGENTCYCLE_HOME", "value": f"{job.mount_path}/.agentcycle"},
           {"name": "HF_HOME", "value": f"{job.mount_path}/.cache/huggingface"},
           {"name": "HOME", "value": "/tmp"},  # the root filesystem is read-only
           {"name": "HF_HUB_OFFLINE", "value": "1"}]
    if job.mlflow_tracking_uri:
        env.append({"name": "MLFLOW_TRACKING_URI", "value": job.mlflow_tracking_uri})
    container: dict[str, Any] = {
        "name": "finetune", "image": job.image, "imagePullPolicy": "IfNotPresent",
        "command": _command(job), "env": env, "resources": resources,
        "workingDir": job.mount_path,
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "data", "mountPath": job.mount_path},
                         {"name": "tmp", "mountPath": "/tmp"},
                         {"name": "shm", "mountPath": "/dev/shm"}],
    }
    if job.mlflow_secret:
        container["envFrom"] = [{"secretRef": {"name": job.mlflow_secret}}]
    return container


def _command(job: FinetuneJob) -> list[str]:
    data, out = _on_volume(job.data, job.mount_path), _on_volume(job.out, job.mount_path)
    args = list(job.finetune_args)
    # A pod the Job retries (backoffLimit) finds the failed one's checkpoints in
    # OUT.partial/ on the volume, and a plain rerun refuses them: resume instead (with
    # nothing to resume, --resume starts from scratch). The user's own choice wins.
    if not {"--resume", "--no-resume", "--overwrite"} & set(args):
        args.append("--resume")
    train = ["agentcycle", "finetune", data, "--out", out, *args]
    if not job.register_as:
        return train
    register = ["agentcycle", "registry", "register", out, "--name", job.register_as]
    return ["sh", "-c", f"{shlex.join(train)} && {shlex.join(register)}"]


def _on_volume(path: str, mount: str) -> str:
    posix = PurePosixPath(path)
    if ".." in posix.parts:
        raise ConfigError(f"{path}: '..' would leave the volume")
    return str(posix if posix.is_absolute() else PurePosixPath(mount) / posix)


def _gpu_affinity(gpu_memory: str) -> dict[str, Any]:
    """GPU feature discovery labels each node's ``nvidia.com/gpu.memory`` in MiB; Gt is
    strict, so 'more than N-1' is 'at least N'."""
    mib = int(float(gpu_memory[:-2]) * _BINARY[gpu_memory[-2:]])
    term = {"key": "nvidia.com/gpu.memory", "operator": "Gt", "values": [str(mib - 1)]}
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [term]}]}}}


def manifest_yaml(manifest: dict[str, Any]) -> str:
    from agentcycle._yaml import dump_yaml12

    return dump_yaml12(manifest, sort_keys=False, width=100)
