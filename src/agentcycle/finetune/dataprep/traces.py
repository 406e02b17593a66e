"""SFT examples from what the agent did: MLflow traces (or Langfuse) and eval runs.

A traced agent run holds, in its last LLM span, the exact messages the model saw
(system prompt, retrieved context, question) and the answer it gave; a good run is a
training example in the model's own prompt format. "Good" is decided by a score:
user feedback logged on the trace (``mlflow.log_feedback``, a number or a bool), or
the router's feedback (``POST /v1/feedback`` -> the ``feedback`` table of router.db,
joined by the span's ``agentcycle.request_id``), or an eval case's scores.
"""

from __future__ import annotations

import sqlite3
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentcycle.errors import ConfigError, DataError, ServiceError
from agentcycle.evals.results import CaseResult, EvalRun
from agentcycle.finetune.dataprep._io import text_of
from agentcycle.settings import Settings

Record = dict[str, Any]
_TEXT_ROLES = {"system", "user", "assistant"}


@dataclass
class Collected:
    """Records kept, and how many of the others were dropped for which reason."""

    records: list[Record] = field(default_factory=list)
    seen: int = 0
    skipped: Counter = field(default_factory=Counter)


@dataclass
class LlmCall:
    """One model call from a trace: its prompt, its answer, and the feedback on it."""

    trace_id: str
    messages: list[dict[str, Any]]
    text: str
    request_id: str = ""
    score: float | None = None


# -- MLflow ------------------------------------------------------------------------

def mlflow_calls(settings: Settings, *, max_traces: int = 1000,
                 router_log: str | Path | None = None, collected: Collected | None = None
                 ) -> list[LlmCall]:
    """The final LLM call of every successful trace in the experiment, newest first, with
    its score (mean of the trace's numeric feedback, else the router's for its request)."""
    import mlflow

    from agentcycle.observe.tracing import setup_tracking

    collected = collected if collected is not None else Collected()
    experiment_id = setup_tracking(settings)
    try:
        traces = mlflow.search_traces(locations=[experiment_id], max_results=max_traces,
                                      order_by=["timestamp_ms DESC"], return_type="list")
    except Exception as exc:
        raise ServiceError(f"cannot read traces from MLflow at {settings.tracking_uri}: "
                           f"{exc}") from None
    router_scores = router_feedback(router_log) if router_log else {}
    calls = []
    for trace in traces:
        collected.seen += 1
        call = _last_llm_call(trace, collected.skipped)
        if call is None:
            continue
        feedback = _trace_feedback(trace)
        call.score = feedback if feedback is not None else router_scores.get(call.request_id)
        calls.append(call)
    return calls


def _last_llm_call(trace: Any, skipped: Counter) -> LlmCall | None:
    state = str(getattr(trace.info.state, "value", trace.info.state))
    if state != "OK":
        skipped["trace failed"] += 1
        return None
    llm = [s for s in trace.data.spans if str(s.span_type) == "LLM"]
    if not llm:
        skipped["no LLM call in the trace"] += 1
        return None
    span = max(llm, key=lambda s: s.start_time_ns)
    messages = (span.inputs or {}).get("messages") if isinstance(span.inputs, dict) else None
    text = (span.outputs or {}).get("text") if isinstance(span.outputs, dict) else None
    if not isinstance(messages, list) or not messages:
        skipped["LLM span without messages"] += 1
        return None
    if not isinstance(text, str) or not text.strip():
        skipped["empty answer"] += 1
        return None
    return LlmCall(trace.info.trace_id, messages, text.strip(),
                   str((span.attributes or {}).get("agentcycle.request_id") or ""))


def _trace_feedback(trace: Any) -> float | None:
    values = []
    for assessment in getattr(trace.info, "assessments", None) or []:
        feedback = getattr(assessment, "feedback", None)
        value = getattr(feedback, "value", None) if feedback is not None else None
        if isinstance(value, bool):
            values.append(1.0 if value else 0.0)
        elif isinstance(value, int | float):
            values.append(float(value))
    return statistics.fmean(values) if values else None


def router_feedback(path: str | Path) -> dict[str, float]:
    """request id -> mean feedback score, from the router's accounting log."""
    file = Path(path)
    if not file.is_file():
        raise DataError(f"router log not found: {path}")
    try:
        with sqlite3.connect(f"file:{file}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT request_id, AVG(score) FROM feedback "
                              "GROUP BY request_id").fetchall()
    except sqlite3.Error as exc:
        raise DataError(f"{path}: not a router log ({exc})") from None
    return {request_id: float(score) for request_id, score in rows}


def sft_from_calls(calls: list[LlmCall], *, min_score: float | None = None,
                   collected: Collected | None = None) -> Collected:
    """``{"messages": [...prompt, answer]}`` records from calls that pass the filter.

    With ``min_score`` only calls scored at least that are kept (unscored ones dropped:
    an unjudged answer is not known to be good). Calls with tool messages are left to
    the tool-call dataset builder.
    """
    collected = collected if collected is not None else Collected()
    for call in calls:
        if min_score is not None:
            if call.score is None:
                collected.skipped["no feedback"] += 1
                continue
            if call.score < min_score:
                collected.skipped[f"score below {min_score:g}"] += 1
                continue
        prompt = chat_messages(call.messages)
        if prompt is None:
            collected.skipped["tool or non-text messages"] += 1
            continue
        record = {"messages": [*prompt, {"role": "assistant", "content": call.text}],
                  "trace_id": call.trace_id}
        if call.score is not None:
            record["score"] = call.score
        collected.records.append(record)
    return collected


def chat_messages(messages: list[Any]) -> list[dict[str, str]] | None:
    """Plain system/user/assistant text messages, or None when there are other kinds."""
    out = []
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in _TEXT_ROLES \
                or message.get("tool_calls"):
            return None
        out.append({"role": message["role"], "content": text_of(message.get("content"))})
    return out


def from_mlflow(settings: Settings, *, min_score: float | None = None,
                router_log: str | Path | None = None, max_traces: int = 1000) -> Collected:
    collected = Collected()
    calls = mlflow_calls(settings, max_traces=max_traces, router_log=router_log,
                         collected=collected)
    return sft_from_calls(calls, min_score=min_score, collected=collected)


# -- Langfuse (untested here: its server needs Docker) -------------------------------

def from_langfuse(settings: Settings, *, limit: int = 1000) -> Collected:
    """Generations recorded in Langfuse, through its SDK's public API (observations v2).

    Not exercised by the test suite (Langfuse's server cannot run here). Scores are not
    read: filter by feedback on the MLflow side, which receives the same spans.
    """
    if not settings.langfuse_enabled:
        raise ConfigError("Langfuse is not configured (LANGFUSE_HOST, LANGFUSE_PUBLIC_KEY, "
                          "LANGFUSE_SECRET_KEY)")
    from langfuse import Langfuse

    client = Langfuse(public_key=settings.langfuse_public_key,
                      secret_key=settings.langfuse_secret_key, host=settings.langfuse_host)
    calls, cursor = [], None
    try:
        while len(calls) < limit:
            page = client.api.observations.get_many(
                type="GENERATION", fields="core,basic,io", parse_io_as_json=True,
                limit=min(100, limit - len(calls)), cursor=cursor)
            for item in page.data:
                calls.append(_langfuse_call(item))
            cursor = getattr(page.meta, "cursor", None)
            if not cursor or not page.data:
                break
    except Exception as exc:
        raise ServiceError(f"cannot read Langfuse at {settings.langfuse_host}: {exc}") from None
    collected = Collected(seen=len(calls))
    usable = [c for c in calls if c.messages and c.text]
    collected.skipped["generation without messages or output"] += len(calls) - len(usable)
    return sft_from_calls(usable, collected=collected)


def _langfuse_call(item: Any) -> LlmCall:
    data = item if isinstance(item, dict) else item.dict()
    messages = data.get("input")
    messages = messages.get("messages") if isinstance(messages, dict) else messages
    output = data.get("output")
    if isinstance(output, dict):  # {"role": "assistant", "content": ...} or {"text": ...}
        output = output.get("content") or output.get("text")
    return LlmCall(str(data.get("traceId") or data.get("trace_id") or ""),
                   messages if isinstance(messages, list) else [], text_of(output).strip())


# -- eval runs ---------------------------------------------------------------------

def case_prompt(case: CaseResult) -> list[dict[str, str]]:
    """The messages the target saw: the RAG prompt over the contexts it retrieved, or
    the bare question for a target without retrieval."""
    if not case.output.contexts:
        return [{"role": "user", "content": case.input}]
    from agentcycle.rag.documents import Chunk
    from agentcycle.rag.prompt import build_messages
    from agentcycle.rag.store import Hit

    hits = [Hit(Chunk(text=c.text, source=c.source, index=i), 1.0)
            for i, c in enumerate(case.output.contexts)]
    return build_messages(case.input, hits)


def case_passes(case: CaseResult, min_score: float | None) -> bool:
    """Passed every scorer, or (with ``min_score``) every score's value is at least it."""
    if case.error or case.output.error:
        return False
    if min_score is None:
        return case.passed
    return bool(case.scores) and all(s.value >= min_score for s in case.scores.values())


def sft_from_eval(run: EvalRun, *, min_score: float | None = None) -> Collected:
    """The passing cases' own answers as SFT examples (rejection sampling)."""
    collected = Collected()
    for case in run.results:
        collected.seen += 1
        if not case_passes(case, min_score):
            collected.skipped["case did not pass"] += 1
            continue
        if not case.output.text.strip():
            collected.skipped["empty answer"] += 1
            continue
        collected.records.append({
            "messages": [*case_prompt(case),
                         {"role": "assistant", "content": case.output.text.strip()}],
            "case_id": case.id, "eval_run": run.run_id})
    return collected
