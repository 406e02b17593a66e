"""W3C trace context (``traceparent``) on NATS messages: one trace id across agents.

MLflow speaks the same header (``mlflow.tracing`` distributed tracing), so a worker's
spans join the coordinator's trace; without an open span we mint a fresh trace id.
"""

from __future__ import annotations

import re
import secrets

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def new_traceparent() -> str:
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def parse_traceparent(value: str | None) -> tuple[str, str] | None:
    """(trace id, parent span id) of a valid header, else None."""
    match = _TRACEPARENT.match((value or "").strip().lower())
    if not match or match.group(1) == "0" * 32 or match.group(2) == "0" * 16:
        return None
    return match.group(1), match.group(2)


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id as the rest of agentcycle writes it (MLflow's ``tr-<hex>``)."""
    parsed = parse_traceparent(traceparent)
    return f"tr-{parsed[0]}" if parsed else None


def current_traceparent() -> str:
    """The open MLflow span's context as a ``traceparent``, or a fresh one."""
    try:
        import mlflow
        from mlflow.tracing.distributed import _get_tracing_headers_from_span

        active = mlflow.get_current_active_span()
        if active is not None:
            header = _get_tracing_headers_from_span(active).get("traceparent")
            if parse_traceparent(header):
                return header
    except Exception:  # tracing is best effort: messages still carry a trace id
        pass
    return new_traceparent()
