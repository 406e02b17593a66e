"""``POST /v1/feedback``: a user's score for one answer, kept where the data tools read it.

The score lands on the answer's MLflow trace as a feedback assessment named
``user_feedback`` (its source: the API key's name), which ``agentcycle data
from-traces --min-score`` averages per trace; and, when ``LANGFUSE_*`` are set, on the
same trace in Langfuse (``POST /api/public/scores``; Langfuse's trace id is MLflow's
without its ``tr-`` prefix, both being the OpenTelemetry trace id).
"""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import BaseModel, Field

from agentcycle.errors import DataError, ServiceError
from agentcycle.settings import Settings

log = logging.getLogger(__name__)

FEEDBACK_NAME = "user_feedback"


class FeedbackRequest(BaseModel):
    trace_id: str = Field(..., min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+$",
                          description="The trace_id an /v1/ask answer carried.")
    score: float = Field(..., ge=0.0, le=1.0,
                         description="0 (bad) .. 1 (good); thumbs up/down: 1/0.")
    comment: str | None = Field(None, max_length=2000)


class FeedbackReceipt(BaseModel):
    trace_id: str
    score: float
    mlflow: Literal["recorded"] = "recorded"
    langfuse: Literal["recorded", "off", "failed"] = "off"


def record_feedback(settings: Settings, request: FeedbackRequest, *, source: str
                    ) -> FeedbackReceipt:
    """Log the score on the trace (MLflow), then Langfuse when configured. Raises
    DataError for a trace MLflow does not hold, ServiceError when MLflow fails."""
    import mlflow
    from mlflow.entities import AssessmentSource, AssessmentSourceType

    from agentcycle.observe.tracing import setup_tracking

    setup_tracking(settings)
    try:
        # a trace just written may still be in MLflow's async queue: flush, then ask again
        found = mlflow.get_trace(request.trace_id, silent=True) or \
            mlflow.get_trace(request.trace_id, silent=True, flush=True)
    except Exception as exc:
        raise ServiceError(f"MLflow at {_where(settings)} cannot be read: "
                           f"{type(exc).__name__}") from None
    if found is None:
        raise DataError(f"no trace '{request.trace_id}' in MLflow: send the trace_id "
                        "an /v1/ask answer carried")
    try:
        mlflow.log_feedback(
            trace_id=request.trace_id, name=FEEDBACK_NAME, value=request.score,
            rationale=request.comment,
            source=AssessmentSource(source_type=AssessmentSourceType.HUMAN, source_id=source))
    except Exception as exc:
        raise ServiceError(f"MLflow at {_where(settings)} did not record the feedback: "
                           f"{type(exc).__name__}") from None
    receipt = FeedbackReceipt(trace_id=request.trace_id, score=request.score)
    if settings.langfuse_enabled:
        receipt.langfuse = "recorded" if _to_langfuse(settings, request, source) else "failed"
    return receipt


def _to_langfuse(settings: Settings, request: FeedbackRequest, source: str) -> bool:
    import httpx

    assert settings.langfuse_host and settings.langfuse_public_key
    body = {"traceId": request.trace_id.removeprefix("tr-"), "name": FEEDBACK_NAME,
            "value": request.score, "dataType": "NUMERIC",
            "comment": request.comment, "metadata": {"source": source}}
    try:
        response = httpx.post(settings.langfuse_host.rstrip("/") + "/api/public/scores",
                              json={k: v for k, v in body.items() if v is not None},
                              auth=(settings.langfuse_public_key,
                                    settings.langfuse_secret_key or ""), timeout=5.0)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        # the status or the error's kind, never the request (it holds the credentials)
        status = getattr(getattr(exc, "response", None), "status_code", None)
        log.warning("Langfuse did not record the feedback score (%s)",
                    status or type(exc).__name__)
        return False
    return True


def _where(settings: Settings) -> str:
    """The tracking store without credentials a URI may carry (user:password@)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(settings.tracking_uri)
    if parts.password or parts.username:
        parts = parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port
                                                        else ""))
    return urlunsplit(parts)
