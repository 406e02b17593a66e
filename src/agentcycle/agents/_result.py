"""The one result every agent returns, whatever its kind (RAG, tools, multi-agent,
workflow): the app serves it, the eval targets score it, the demo reports it."""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, Field


class Source(BaseModel):
    """A passage the agent retrieved and may cite."""

    source: str  # the document (a file name, a URL)
    heading: str = ""  # the section it came from, e.g. "§ 8. Deposit cap"
    score: float = 0.0
    text: str = ""


class ToolCallRecord(BaseModel):
    """One tool call the agent made: what it asked for and what came back."""

    id: str = ""
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    result: Any = None
    error: str | None = None  # the tool raised, timed out, or the call was invalid
    latency_ms: float = 0.0


StepKind = Literal["llm", "tool", "retrieve", "node", "agent", "approval"]


class Step(BaseModel):
    """One thing the agent did, in order: a model call, a tool call, a graph node."""

    kind: StepKind
    name: str
    latency_ms: float = 0.0
    detail: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def model_call(cls, name: str, *, latency_ms: float, backend: str,
                   finish_reason: str | None, **detail: Any) -> Step:
        """The step of one model call. A call cut at max_tokens (finish reason
        ``length``) says so: its answer may stop mid-sentence, or a tool call after the
        ones that closed may be lost, which would otherwise read as the model's choice."""
        if finish_reason == "length":
            detail["cut_at_max_tokens"] = True
        return cls(kind="llm", name=name, latency_ms=round(latency_ms, 1),
                   detail={"backend": backend, **detail})

    @property
    def cut_at_max_tokens(self) -> bool:
        return bool(self.detail.get("cut_at_max_tokens"))


class AgentResult(BaseModel):
    """What an agent run produced, and what it cost."""

    answer: str
    kind: str = "agent"  # rag, tools, multi, workflow, or a user's own
    sources: list[Source] = Field(default_factory=list)
    tool_calls: list[ToolCallRecord] = Field(default_factory=list)
    steps: list[Step] = Field(default_factory=list)
    model: str = ""
    backend: str = ""
    route_reason: str = ""
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    trace_id: str | None = None
    # "completed"; "interrupted" (a workflow waiting for approval); "failed".
    status: str = "completed"
    error: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add_usage(self, completion: Any) -> None:
        """Add one router Completion's tokens and cost; the last call names the model."""
        self.prompt_tokens += completion.prompt_tokens
        self.completion_tokens += completion.completion_tokens
        self.cost_usd += completion.cost_usd
        self.model, self.backend = completion.model, completion.backend
        self.route_reason = completion.reason

    def merge_usage(self, other: AgentResult) -> None:
        """Add a sub-agent's tokens and cost (a multi-agent run sums its workers')."""
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cost_usd += other.cost_usd


def elapsed_ms(started: float) -> float:
    """Milliseconds since ``started`` (a ``time.perf_counter()``), as results report them."""
    return round((time.perf_counter() - started) * 1000, 1)
