"""The app's workloads: Deployments (or CronJobs), Services, the HTTPRoute, the Knative
Service and the PVCs, as plain dicts in the platform's shape (``thinkube-deploy.md``
section 3)."""

from __future__ import annotations

from typing import Any

from agentcycle.deploy._env import container_env, env_from
from agentcycle.deploy.target import DeployTarget
from agentcycle.deploy.thinkube import SIZES, Container, ThinkubeDeployment

Obj = dict[str, Any]
_BINARY = {"Mi": 1, "Gi": 1024, "Ti": 1024 * 1024}
CACHE_PATH = "/cache"  # a GPU app's model cache (HF_HOME lives under it)


def labels(target: DeployTarget, component: str | None = None) -> dict[str, str]:
    out = {"app.kubernetes.io/name": target.app_name,
           "app.kubernetes.io/managed-by": "argocd"}
    if component:
        out["app.kubernetes.io/component"] = component
    return out


def metadata(name: str, target: DeployTarget, component: str | None = None,
             namespace: str | None = None) -> Obj:
    return {"name": name, "namespace": namespace or target.namespace,
            "labels": labels(target, component)}


def workload_name(target: DeployTarget, container: Container) -> str:
    return f"{target.app_name}-{container.name}"


def mount_claim(target: DeployTarget, volume: str) -> str:
    return f"{target.app_name}-{volume}"


def resources(container: Container) -> Obj:
    (mem_req, cpu_req), (mem_lim, cpu_lim) = SIZES[container.size]
    out: Obj = {"requests": {"cpu": cpu_req, "memory": mem_req},
                "limits": {"cpu": cpu_lim, "memory": mem_lim}}
    if container.gpu:  # an extended resource: request equals limit
        out["requests"]["nvidia.com/gpu"] = container.gpu.count
        out["limits"]["nvidia.com/gpu"] = container.gpu.count
    return out


def _probes(container: Container) -> Obj:
    if not container.health or container.port is None:
        return {}
    get = {"path": container.health, "port": container.port}
    probes: Obj = {"readinessProbe": {"httpGet": dict(get), "periodSeconds": 10,
                                      "timeoutSeconds": 5},
                   "livenessProbe": {"httpGet": dict(get), "periodSeconds": 20,
                                     "timeoutSeconds": 5, "failureThreshold": 3}}
    # A model loading into a GPU takes minutes: the start-up probe holds liveness off.
    attempts = 90 if container.gpu else 30
    probes["startupProbe"] = {"httpGet": dict(get), "periodSeconds": 10,
                              "failureThreshold": attempts}
    return probes


def _container(spec: ThinkubeDeployment, container: Container, target: DeployTarget,
               image: str) -> Obj:
    out: Obj = {"name": container.name, "image": image, "imagePullPolicy": "IfNotPresent"}
    if container.port is not None:
        out["ports"] = [{"name": "http", "containerPort": container.port,
                         "protocol": "TCP"}]
    out["env"] = container_env(spec, container, target)
    if container.gpu and all(e["name"] != "HF_HOME" for e in out["env"]):
        out["env"].append({"name": "HF_HOME", "value": f"{CACHE_PATH}/huggingface"})
    out["envFrom"] = env_from(target)
    out["resources"] = resources(container)
    out.update(_probes(container))
    mounts = [{"name": m.split(":", 1)[0], "mountPath": m.split(":", 1)[1]}
              for m in container.mounts]
    if container.gpu:
        mounts.append({"name": "model-cache", "mountPath": CACHE_PATH})
    if mounts:
        out["volumeMounts"] = mounts
    out["securityContext"] = {"allowPrivilegeEscalation": False}
    return out


def _volumes(container: Container, target: DeployTarget) -> list[Obj]:
    names = [m.split(":", 1)[0] for m in container.mounts]
    if container.gpu:
        names.append("model-cache")
    return [{"name": n, "persistentVolumeClaim": {"claimName": mount_claim(target, n)}}
            for n in dict.fromkeys(names)]


def _gpu_affinity(memory: str) -> Obj:
    """GPU feature discovery labels nodes with ``nvidia.com/gpu.memory`` in MiB; Gt is
    strict, so 'more than N-1' is 'at least N'."""
    mib = int(float(memory[:-2]) * _BINARY[memory[-2:]])
    term = {"key": "nvidia.com/gpu.memory", "operator": "Gt", "values": [str(mib - 1)]}
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [term]}]}}}


def pod_spec(spec: ThinkubeDeployment, container: Container, target: DeployTarget,
             image: str) -> Obj:
    pod: Obj = {"priorityClassName": "thinkube-workload",
                "imagePullSecrets": [{"name": "app-pull-secret"}],
                "containers": [_container(spec, container, target, image)]}
    if container.migrations and container.migrations.auto:
        pod["initContainers"] = [_migrations(spec, container, target, image)]
    if container.gpu:
        pod["affinity"] = _gpu_affinity(container.gpu.memory)
        pod["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists",
                               "effect": "NoSchedule"}]
    volumes = _volumes(container, target)
    if volumes:
        pod["volumes"] = volumes
    return pod


def _migrations(spec: ThinkubeDeployment, container: Container, target: DeployTarget,
                image: str) -> Obj:
    tool = container.migrations.tool if container.migrations else ""
    command = ["alembic", "upgrade", "head"] if tool == "alembic" else [tool, "migrate"]
    return {"name": "migrate", "image": image, "command": command,
            "env": container_env(spec, container, target), "envFrom": env_from(target),
            "resources": resources(container) if not container.gpu else
            {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}}


def workload(spec: ThinkubeDeployment, container: Container, target: DeployTarget,
             image: str) -> Obj:
    """A Deployment, or a CronJob when the container has a schedule."""
    name = workload_name(target, container)
    meta = metadata(name, target, container.name)
    selector = {"app.kubernetes.io/name": target.app_name,
                "app.kubernetes.io/component": container.name}
    template = {"metadata": {"labels": labels(target, container.name)},
                "spec": pod_spec(spec, container, target, image)}
    if container.schedule:
        template["spec"]["restartPolicy"] = "OnFailure"
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            template["spec"]["containers"][0].pop(probe, None)
        return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta,
                "spec": {"schedule": container.schedule, "concurrencyPolicy": "Forbid",
                         "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 3,
                         "jobTemplate": {"spec": {"backoffLimit": 1,
                                                  "template": template}}}}
    replicas = spec.spec.deployment.replicas
    deployment: Obj = {"replicas": 1 if replicas is None else replicas,
                       "revisionHistoryLimit": 3,
                       "selector": {"matchLabels": selector}, "template": template}
    if container.gpu:
        # A second GPU pod could not start beside the first: replace, do not surge.
        deployment["strategy"] = {"type": "Recreate"}
        deployment["progressDeadlineSeconds"] = 1800
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
            "spec": deployment}


def service(container: Container, target: DeployTarget) -> Obj:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": metadata(container.name, target, container.name),
            "spec": {"type": "ClusterIP",
                     "selector": {"app.kubernetes.io/name": target.app_name,
                                  "app.kubernetes.io/component": container.name},
                     "ports": [{"name": "http", "port": container.port,
                                "targetPort": container.port, "protocol": "TCP"}]}}


def http_route(spec: ThinkubeDeployment, target: DeployTarget) -> Obj:
    routes = [(r.path, spec.container(r.to)) for r in spec.spec.routes]
    if not routes:
        first = next(c for c in spec.spec.containers if c.port is not None and not c.schedule)
        routes = [("/", first)]
    rules = [{"matches": [{"path": {"type": "PathPrefix", "value": path}}],
              "backendRefs": [{"name": c.name, "port": c.port}]} for path, c in routes]
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": metadata(target.app_name, target),
            "spec": {"parentRefs": [{"group": "gateway.networking.k8s.io",
                                     "kind": "Gateway", "name": "thinkube-gateway",
                                     "namespace": "gateway-system", "sectionName": "https"}],
                     "hostnames": [target.host], "rules": rules}}


def knative_service(spec: ThinkubeDeployment, target: DeployTarget, image: str) -> Obj:
    container = spec.spec.containers[0]
    body = _container(spec, container, target, image)
    body["ports"] = [{"name": "http1", "containerPort": container.port}]
    body.pop("startupProbe", None)
    body.pop("imagePullPolicy")
    dep = spec.spec.deployment
    annotations = {}
    for key, value in (("min-scale", dep.min_scale), ("max-scale", dep.max_scale)):
        if value is not None:
            annotations[f"autoscaling.knative.dev/{key}"] = str(value)
    template_spec: Obj = {"containers": [body],
                          "imagePullSecrets": [{"name": "app-pull-secret"}],
                          "timeoutSeconds": dep.timeout_seconds or 300}
    if dep.container_concurrency is not None:
        template_spec["containerConcurrency"] = dep.container_concurrency
    template: Obj = {"metadata": {"labels": labels(target, container.name)},
                     "spec": template_spec}
    if annotations:
        template["metadata"]["annotations"] = annotations
    return {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
            "metadata": metadata(target.app_name, target, container.name),
            "spec": {"template": template}}


def claims(spec: ThinkubeDeployment, target: DeployTarget) -> list[Obj]:
    """One PVC per mount name, and a model cache for each GPU app."""
    sizes: dict[str, str] = {}
    for container in spec.spec.containers:
        for mount in container.mounts:
            sizes.setdefault(mount.split(":", 1)[0], "10Gi")
        if container.gpu:
            sizes["model-cache"] = "100Gi"
    return [{"apiVersion": "v1", "kind": "PersistentVolumeClaim",
             "metadata": metadata(mount_claim(target, name), target),
             "spec": {"accessModes": ["ReadWriteOnce"],
                      "resources": {"requests": {"storage": size}}}}
            for name, size in sorted(sizes.items())]
