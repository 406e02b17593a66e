"""Service discovery report: for each service, the platform's real one or the embedded
default, and whether it answers. ``agentcycle doctor`` prints this."""

from __future__ import annotations

import socket
from dataclasses import asdict, dataclass
from urllib.parse import urlparse

import httpx

from agentcycle.settings import Settings


@dataclass
class ServiceStatus:
    service: str
    mode: str  # real | embedded | off
    location: str
    reachable: bool | None  # None: nothing to reach (embedded or off)
    detail: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def _http_ok(url: str, headers: dict | None = None) -> tuple[bool, str]:
    try:
        response = httpx.get(url, timeout=3, headers=headers, follow_redirects=True)
    except httpx.HTTPError as exc:
        return False, type(exc).__name__
    # Any HTTP answer proves the service is there; 401/403 just means it wants a key.
    return response.status_code < 500, f"HTTP {response.status_code}"


def _tcp_ok(url: str, default_port: int = 4222) -> tuple[bool, str]:
    parsed = urlparse(url if "://" in url else f"nats://{url}")
    try:
        with socket.create_connection((parsed.hostname, parsed.port or default_port),
                                      timeout=3):
            return True, "TCP open"
    except OSError as exc:
        return False, type(exc).__name__


def _real(service: str, url: str, probe: tuple[bool, str]) -> ServiceStatus:
    return ServiceStatus(service, "real", url, probe[0], probe[1])


def discover(settings: Settings, check: bool = True) -> list[ServiceStatus]:
    """Every service agentcycle uses; ``check`` probes the real ones over the network."""
    from agentcycle.errors import ModelError
    from agentcycle.models.bundled import BUNDLED_CHAT_NAME, bundled_embedding_dir

    probe = (lambda fn, *a: fn(*a)) if check else (lambda fn, *a: (None, "not checked"))
    rows = []
    chat = settings.chat_model or str(settings.models_dir / BUNDLED_CHAT_NAME)
    rows.append(ServiceStatus("chat model", "embedded", chat, None,
                              "configured" if settings.chat_model else "bundled SmolLM2-135M"))
    try:
        embedding = settings.embedding_model or str(bundled_embedding_dir())
    except ModelError as exc:
        embedding = f"missing: {exc}"
    rows.append(ServiceStatus("embedding model", "embedded", embedding, None,
                              "configured" if settings.embedding_model else "bundled MiniLM-L6"))
    if settings.server_url:
        rows.append(_real("model server", settings.server_url,
                          probe(_http_ok, settings.server_url.rstrip("/").removesuffix("/v1")
                                + "/health")))
    else:
        rows.append(ServiceStatus("model server", "embedded", "transformers serve (started on "
                                  "demand)", None))
    if settings.qdrant_url:
        rows.append(_real("qdrant", settings.qdrant_url,
                          probe(_http_ok, settings.qdrant_url.rstrip("/") + "/healthz")))
    else:
        rows.append(ServiceStatus("qdrant", "embedded", str(settings.qdrant_path), None,
                                  "local mode"))
    if settings.mlflow_tracking_uri and settings.mlflow_tracking_uri.startswith("http"):
        rows.append(_real("mlflow", settings.mlflow_tracking_uri,
                          probe(_http_ok, settings.mlflow_tracking_uri.rstrip("/") + "/health")))
    else:
        rows.append(ServiceStatus("mlflow", "embedded", settings.tracking_uri, None,
                                  "runs and traces"))
    for name, url, path in [("litellm", settings.litellm_endpoint, "/health/liveliness"),
                            ("llm gateway", settings.llm_gateway_url, "/health"),
                            ("langfuse", settings.langfuse_host, "/api/public/health")]:
        if url:
            rows.append(_real(name, url, probe(_http_ok, url.rstrip("/") + path)))
        else:
            rows.append(ServiceStatus(name, "off", "-", None, "not configured"))
    if settings.nats_url:
        rows.append(_real("nats", settings.nats_url, probe(_tcp_ok, settings.nats_url)))
    else:
        rows.append(_embedded_nats(settings))
    rows.append(_checkpoints(settings, probe))
    rows.append(_router_state(settings, probe))
    return rows


def _router_state(settings: Settings, probe) -> ServiceStatus:
    """Where the router keeps budgets, cooldowns and A/B arms: Valkey/Redis (shared by
    proxy replicas), or each process (its SQLite log under the data dir)."""
    from agentcycle.router.shared_state import uses_redis

    url = settings.router_redis_url
    if not url or not uses_redis(settings):
        return ServiceStatus("router state", "embedded", str(settings.home.resolve() /
                                                             "router.db"), None,
                             "per process (set REDIS_URL to share it between replicas)")
    parsed = urlparse(url)
    shown = f"{parsed.scheme}://{parsed.hostname}:{parsed.port or 6379}{parsed.path}"
    status = _real("router state", shown, probe(_tcp_ok, url, 6379))
    namespace = settings.router_namespace or "default"
    status.detail = f"shared by replicas, namespace '{namespace}'; {status.detail}"
    return status


def _checkpoints(settings: Settings, probe) -> ServiceStatus:
    """Where workflow checkpoints live: the platform's PostgreSQL, or SQLite here."""
    if not settings.database_url:
        path = settings.checkpoint_uri.removeprefix("sqlite:///")
        return ServiceStatus("postgresql", "embedded", path, None, "SQLite workflow checkpoints")
    parsed = urlparse(settings.database_url)
    shown = f"{parsed.scheme}://{parsed.hostname}:{parsed.port or 5432}{parsed.path}"
    status = _real("postgresql", shown, probe(_tcp_ok, settings.database_url, 5432))
    status.detail = f"workflow checkpoints; {status.detail}"
    return status


def _embedded_nats(settings: Settings) -> ServiceStatus:
    """The embedded nats-server's store, and the server running on it, if one is."""
    import json

    detail = "nats-server with JetStream (started on demand)"
    try:
        state = json.loads((settings.nats_dir / "server.json").read_text())
        if _tcp_ok(state["url"])[0]:
            detail = f"running at {state['url']} (pid {state['pid']})"
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return ServiceStatus("nats", "embedded", str(settings.nats_dir), None, detail)
