"""Every agent run is a trace: MLflow tracing always, Langfuse too when configured.

MLflow is the embedded trace store (SQLite under the data dir, or the platform's
server). Langfuse speaks OpenTelemetry, so when ``LANGFUSE_*`` are set we turn on
MLflow's OTLP dual export towards Langfuse's OTLP endpoint: the same spans, with the
GenAI semantic-convention attributes, land in both without a second instrumentation.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from agentcycle.errors import ServiceError
from agentcycle.settings import Settings

log = logging.getLogger(__name__)

_configured: tuple | None = None
# The variables (and the working directory: the default data dir is relative) that
# decide Settings().tracking_uri; when they change, spans follow them to the new store.
_STORE_ENV = ("AGENTCYCLE_HOME", "MLFLOW_TRACKING_URI", "AGENTCYCLE_EXPERIMENT",
              "LANGFUSE_HOST", "LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY")
_env_seen: tuple | None = None
_TRACE_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
                  "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


def _store_env() -> tuple:
    # ~2 us, against ~1.3 ms for building Settings() on every span.
    return (os.getcwd(), *(os.environ.get(name) for name in _STORE_ENV))


def langfuse_otlp_env(settings: Settings) -> dict[str, str]:
    """The OpenTelemetry exporter variables that point spans at Langfuse."""
    if not settings.langfuse_enabled:
        return {}
    token = base64.b64encode(
        f"{settings.langfuse_public_key}:{settings.langfuse_secret_key}".encode()
    ).decode()
    return {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT":
            settings.langfuse_host.rstrip("/") + "/api/public/otel/v1/traces",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS": f"Authorization=Basic {token}",
        "MLFLOW_TRACE_ENABLE_OTLP_DUAL_EXPORT": "true",
    }


def unreachable(uri: str, timeout: float = 3.0) -> str | None:
    """Why an MLflow server does not answer, or None (a local store always answers)."""
    if not uri.startswith(("http://", "https://")):
        return None
    import httpx

    try:
        httpx.get(uri.rstrip("/") + "/health", timeout=timeout)
    except httpx.HTTPError as exc:
        return f"MLflow at {uri} is unreachable ({type(exc).__name__})"
    return None


def setup_tracking(settings: Settings) -> str:
    """Point MLflow (runs and traces) at the configured store; returns the experiment id."""
    global _configured, _env_seen
    import mlflow

    _env_seen = _store_env()
    key = (settings.tracking_uri, settings.mlflow_experiment, settings.langfuse_enabled)
    if _configured and _configured[0] == key:
        return _configured[1]
    if _configured:
        # Traces are exported in the background to whatever store is current when they
        # are written: the old store's must land before we point MLflow elsewhere.
        mlflow.flush_trace_async_logging()
    down = unreachable(settings.tracking_uri)  # seconds, not MLflow's minutes of retries
    if down:
        raise ServiceError(down)
    if settings.tracking_uri.startswith(("http://", "https://")):
        # Traces are exported in the background, and the process waits for them at exit:
        # with MLflow's default 7 retries each, a server that died mid-run held a finished
        # agent run's exit for minutes. The user's own values win.
        for name, value in _TRACE_RETRIES.items():
            os.environ.setdefault(name, value)
    settings.ensure_home()
    if settings.mlflow_username:  # MLflow's client reads its credentials from these
        os.environ["MLFLOW_TRACKING_USERNAME"] = settings.mlflow_username
        os.environ["MLFLOW_TRACKING_PASSWORD"] = settings.mlflow_password or ""
    os.environ.update(langfuse_otlp_env(settings))
    exported = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(settings.tracking_uri)
    if not settings.mlflow_tracking_uri:
        # MLflow exports the URI as MLFLOW_TRACKING_URI (for subprocesses), and Settings()
        # reads that variable as the platform's server: left there, it would pin every
        # later Settings() to this embedded store. Subprocesses find the embedded store
        # from AGENTCYCLE_HOME, which they inherit.
        if exported is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = exported
    try:
        experiment = mlflow.get_experiment_by_name(settings.mlflow_experiment)
        experiment_id = (
            experiment.experiment_id
            if experiment
            else mlflow.create_experiment(
                settings.mlflow_experiment,
                artifact_location=None if settings.mlflow_tracking_uri
                else settings.artifacts_dir.as_uri(),
            )
        )
        mlflow.set_experiment(experiment_id=experiment_id)
    except Exception as exc:
        _configured = None  # MLflow points at the failed store now: the next call re-points it
        raise ServiceError(f"MLflow at {settings.tracking_uri} is unusable: {exc}") from None
    mlflow.tracing.reset()  # rebuild the tracer provider with the exporters above
    _configured = (key, experiment_id)
    return experiment_id


@contextlib.contextmanager
def span(name: str, span_type: str = "UNKNOWN", inputs: Any = None,
         attributes: dict[str, Any] | None = None, *,
         settings: Settings | None = None) -> Iterator[Any]:
    """An MLflow span (a new trace when no span is open).

    A span that starts a trace writes to ``settings``' store when given; otherwise to
    the store last chosen by ``setup_tracking``, unless the environment that
    ``Settings()`` reads (``AGENTCYCLE_HOME``, ``MLFLOW_TRACKING_URI`` ...) or the working
    directory changed since: then to the store ``Settings()`` names now. A span inside
    an open one always joins that trace, wherever it is stored.
    """
    import mlflow

    if mlflow.get_current_active_span() is None:
        try:
            if settings is not None:
                setup_tracking(settings)
            elif _configured is None or _store_env() != _env_seen:
                setup_tracking(Settings())
        except ServiceError as exc:
            # A trace store that is down must not stop the agent: it runs untraced.
            _warn_untraced(str(exc))
            yield _NoSpan()
            return

    with mlflow.start_span(name=name, span_type=span_type) as current:
        if inputs is not None:
            current.set_inputs(inputs)
        if attributes:
            current.set_attributes(attributes)
        yield current


_warned: set[str] = set()


def _warn_untraced(reason: str) -> None:
    if reason not in _warned:
        _warned.add(reason)
        log.warning("%s: agent runs go on without traces", reason)


class _NoSpan:
    """Stands in for a span while the trace store is down; takes the same calls."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith(("set_", "add_", "record_", "end")):
            return lambda *args, **kwargs: None
        return None  # trace_id, span_id ...: there is no trace


@dataclass
class TraceRow:
    trace_id: str
    time: str
    name: str
    status: str
    latency_ms: float
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    question: str


def list_traces(settings: Settings, last: int = 10) -> list[TraceRow]:
    """The newest ``last`` traces, newest first, with their headline numbers."""
    import mlflow

    experiment_id = setup_tracking(settings)
    traces = mlflow.search_traces(
        locations=[experiment_id], max_results=last, order_by=["timestamp_ms DESC"],
        return_type="list",
    )
    rows = []
    for trace in traces:
        info = trace.info
        root = next((s for s in trace.data.spans if s.parent_id is None), None)
        attrs = _summed_llm_attributes(trace.data.spans)
        inputs = (root.inputs if root else None) or {}
        rows.append(TraceRow(
            trace_id=info.trace_id,
            time=_format_ms(info.request_time),
            name=root.name if root else "",
            status=str(info.state.value if hasattr(info.state, "value") else info.state),
            latency_ms=float(info.execution_duration or 0),
            model=attrs["model"],
            prompt_tokens=attrs["prompt_tokens"],
            completion_tokens=attrs["completion_tokens"],
            cost_usd=attrs["cost_usd"],
            question=str(inputs.get("question", "") if isinstance(inputs, dict) else inputs)[:80],
        ))
    return rows


def _summed_llm_attributes(spans) -> dict[str, Any]:
    total = {"model": "", "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0}
    for s in spans:
        attributes = s.attributes or {}
        if "gen_ai.usage.input_tokens" not in attributes:
            continue
        total["model"] = attributes.get("gen_ai.response.model") or total["model"]
        total["prompt_tokens"] += int(attributes.get("gen_ai.usage.input_tokens") or 0)
        total["completion_tokens"] += int(attributes.get("gen_ai.usage.output_tokens") or 0)
        total["cost_usd"] += float(attributes.get("agentcycle.cost_usd") or 0)
    return total


def _format_ms(ms: int | None) -> str:
    import datetime as dt

    if not ms:
        return ""
    return dt.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")
