"""The environment every container of a deployed app gets, without one secret value.

What the platform injects (``thinkube-platform.md`` section 1): ``APP_NAME``,
``APP_URL``, ``DOMAIN_NAME``, ``CONTAINER_REGISTRY``, the URLs of the services the app
declares, ``MLFLOW_*``, ``SEAWEEDFS_*``, each ``spec.dependencies`` URL, ``spec.env``
defaults and the template's parameters upper-cased. Unlike the platform's generator,
every credential is a ``secretKeyRef`` into a Secret that lives only in the cluster:
``<app>-platform`` (service credentials), ``<app>-db-credentials`` (PostgreSQL) and,
for the user's own values, ``<app>-env`` through ``envFrom`` (all optional).
"""

from __future__ import annotations

from typing import Any

from agentcycle.deploy.target import DeployTarget
from agentcycle.deploy.thinkube import Container, ThinkubeDeployment
from agentcycle.errors import ConfigError

_MLFLOW = "http://mlflow.mlflow.svc.cluster.local:5000"
_LITELLM = "http://litellm.litellm.svc.cluster.local:4000"
_QDRANT = "http://qdrant.qdrant.svc.cluster.local:6333"
_NATS = "nats://nats.nats.svc.cluster.local:4222"
_LANGFUSE = "http://langfuse-web.langfuse.svc.cluster.local:3000"
_GATEWAY = "http://llm-gateway.llm-gateway.svc.cluster.local:8080"

# A dependency's name or type -> (its in-cluster URL, the credentials it needs).
DEPENDENCY_URLS: dict[str, tuple[str, tuple[str, ...]]] = {
    "litellm": (_LITELLM, ("LITELLM_MASTER_KEY",)),
    "llm-proxy": (_LITELLM, ("LITELLM_MASTER_KEY",)),
    "llm-gateway": (_GATEWAY, ("THINKUBE_API_TOKEN",)),
    "qdrant": (_QDRANT, ("QDRANT_API_KEY",)),
    "vector-db": (_QDRANT, ("QDRANT_API_KEY",)),
    "vectordb": (_QDRANT, ("QDRANT_API_KEY",)),
    "vector-database": (_QDRANT, ("QDRANT_API_KEY",)),
    "nats": (_NATS, ()),
    "messaging": (_NATS, ()),
    "message-bus": (_NATS, ()),
    "langfuse": (_LANGFUSE, ("LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY")),
    "observability": (_LANGFUSE, ("LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY")),
    "tracing": (_LANGFUSE, ("LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY")),
    "mlflow": (_MLFLOW, ()),
    "experiment-tracking": (_MLFLOW, ()),
    "ml-tracking": (_MLFLOW, ()),
}
_POSTGRES = ("POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_USER", "POSTGRES_PASSWORD",
             "POSTGRES_DB")


def platform_secret(target: DeployTarget) -> str:
    return f"{target.app_name}-platform"


def db_secret(target: DeployTarget) -> str:
    return f"{target.app_name}-db-credentials"


def env_secret(target: DeployTarget) -> str:
    return f"{target.app_name}-env"


def _secret_ref(secret: str, key: str) -> dict[str, Any]:
    return {"secretKeyRef": {"name": secret, "key": key, "optional": True}}


def container_env(spec: ThinkubeDeployment, container: Container,
                  target: DeployTarget) -> list[dict[str, Any]]:
    """The container's ``env`` list: later sources override earlier ones by name
    (platform < services < dependencies < spec.env < parameters < the container's own)."""
    env: dict[str, dict[str, Any]] = {}

    def value(name: str, text: object) -> None:
        env[name] = {"name": name, "value": _text(text)}

    def secret(name: str, secret_name: str, key: str | None = None) -> None:
        env[name] = {"name": name, "valueFrom": _secret_ref(secret_name, key or name)}

    for name, text in (("APP_NAME", target.app_name), ("APP_URL", target.app_url),
                       ("DOMAIN_NAME", target.domain),
                       ("CONTAINER_REGISTRY", target.registry)):
        value(name, text)
    shared = platform_secret(target)
    value("MLFLOW_TRACKING_URI", target.service_urls.get("mlflow", _MLFLOW))
    secret("MLFLOW_TRACKING_USERNAME", shared, "MLFLOW_AUTH_USERNAME")
    secret("MLFLOW_TRACKING_PASSWORD", shared, "MLFLOW_AUTH_PASSWORD")
    services = spec.services
    if "database" in services:
        secret("DATABASE_URL", db_secret(target))
        for name in _POSTGRES:
            secret(name, db_secret(target))
    if "cache" in services:
        for name in ("CACHE_URL", "REDIS_URL"):
            secret(name, shared, "CACHE_URL")  # the URL carries Valkey's password
    if "queue" in services:
        secret("QUEUE_URL", shared)
    if "storage" in services:
        for name in ("SEAWEEDFS_S3_ENDPOINT", "SEAWEEDFS_ACCESS_KEY", "SEAWEEDFS_SECRET_KEY"):
            secret(name, shared)
    for dep in spec.spec.dependencies:
        url, credentials = dependency_url(dep.name, dep.type, target)
        value(dep.env, url)
        for key in credentials:
            secret(key, shared)
    for default in spec.spec.env:
        if default.default is not None:
            value(default.name, default.default)
    for key, param in sorted(target.parameters.items()):
        value(key.upper(), param)
    for item in container.environment:
        value(item.name, item.value)
    return list(env.values())


def dependency_url(name: str, kind: str, target: DeployTarget) -> tuple[str, tuple[str, ...]]:
    """A dependency's URL (the target's ``service_urls`` first, by name then type) and
    the credential variables it brings along."""
    known = DEPENDENCY_URLS.get(name) or DEPENDENCY_URLS.get(kind)
    url = target.service_urls.get(name) or target.service_urls.get(kind)
    if url is None and known is None:
        raise ConfigError(f"thinkube.yaml: dependency '{name}' (type '{kind}') is not a "
                          "service agentcycle knows: give its URL in the deploy target's "
                          f"service_urls (known: {', '.join(sorted(DEPENDENCY_URLS))})")
    return url or known[0], (known[1] if known else ())  # type: ignore[index]


def env_from(target: DeployTarget) -> list[dict[str, Any]]:
    """The user's own variables and secrets: one optional Secret, made in the cluster."""
    return [{"secretRef": {"name": env_secret(target), "optional": True}}]


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
