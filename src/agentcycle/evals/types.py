"""The nouns every part of the eval framework shares (inspect_ai's shape):

a **Case** (one input with its references) goes to a **Target** (an endpoint, the router,
a Python function, an agent app), which returns an **Output** (text, retrieved context,
tool calls, cost and latency); **scorers** turn (case, output) into **Scores**.

Suites, targets, scorers and the runner live in their own modules and meet only here.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ToolCall(BaseModel):
    """A tool call made by the agent, or one a case expects."""

    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    # For calls the agent made: what came back, or why the call failed (the model named
    # an unknown tool, its arguments did not validate, the tool raised or timed out).
    result: Any = None
    error: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        # A bare name ("lookup_policy", or a CSV cell "a|b") expects the call, any arguments.
        return {"name": value} if isinstance(value, str) else value


class Context(BaseModel):
    """A passage the agent retrieved (or a case's reference source)."""

    source: str = ""  # e.g. "§ 7" or a file name; matched against reference sources
    text: str = ""


class Case(BaseModel):
    """One test of the agent. Only ``id`` and ``input`` are required."""

    # YAML reads `id: 1`, `reference: 30` and `keywords: [21]` as numbers: they mean text.
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    id: str
    input: str | list[dict[str, Any]]  # a question, or chat messages
    reference: str | None = None  # the reference answer
    keywords: list[str] = Field(default_factory=list)  # facts the answer must contain
    reference_sources: list[str] = Field(default_factory=list)
    expected_tools: list[ToolCall] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    # Per-case pass thresholds by scorer name, overriding the suite's.
    thresholds: dict[str, float] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def question(self) -> str:
        """The input as text (the last user message for chat input)."""
        if isinstance(self.input, str):
            return self.input
        users = [m.get("content", "") for m in self.input if m.get("role") == "user"]
        return str(users[-1]) if users else ""


class Output(BaseModel):
    """What a target returned for one case."""

    text: str = ""
    contexts: list[Context] = Field(default_factory=list)
    tool_calls: list[ToolCall] = Field(default_factory=list)
    steps: int = 1  # agent steps / model calls taken
    truncated: bool = False  # a model call stopped at max_tokens (its answer may be cut)
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    model: str = ""  # the backend or model that answered
    error: str | None = None  # set when the target failed on this case


class Score(BaseModel):
    """One scorer's verdict on one case: a value in [0, 1] and whether it passed."""

    value: float
    passed: bool
    explanation: str = ""
