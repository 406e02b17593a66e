"""The human's decision at the approval step, and the workflow's typed errors."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ValidationError, model_validator

from agentcycle.errors import ConfigError, DataError


class ThreadNotFound(DataError):
    """No workflow thread has this id in the store."""


class ThreadFinished(ConfigError):
    """The thread already completed or was rejected: there is nothing to resume."""


class InvalidDecision(ConfigError):
    """The decision is not approve, edit(text) or reject(reason), or does not fit the
    thread's state."""


class Decision(BaseModel):
    """approve the draft, edit it (replace its text), or reject it (with a reason)."""

    action: Literal["approve", "edit", "reject"]
    text: str | None = None
    reason: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> Decision:
        if self.action == "edit" and not (self.text or "").strip():
            raise ValueError("an edit needs the replacement text")
        if self.action == "reject" and not (self.reason or "").strip():
            raise ValueError("a rejection needs a reason")
        return self

    @classmethod
    def approve(cls) -> Decision:
        return cls(action="approve")

    @classmethod
    def edit(cls, text: str) -> Decision:
        return cls(action="edit", text=text)

    @classmethod
    def reject(cls, reason: str) -> Decision:
        return cls(action="reject", reason=reason)


def parse_decision(decision: Decision | dict[str, Any] | str) -> Decision:
    """A Decision from itself, a dict ({"action": "edit", "text": ...}) or "approve"."""
    if isinstance(decision, Decision):
        return decision
    if isinstance(decision, str):
        decision = {"action": decision.strip().lower()}
    if not isinstance(decision, dict):
        raise InvalidDecision(f"invalid decision {decision!r}: use approve, edit(text) or "
                              "reject(reason)")
    try:
        return Decision.model_validate(decision)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        detail = error["msg"].removeprefix("Value error, ")
        raise InvalidDecision(f"invalid decision{' ' + where if where else ''}: {detail} "
                              "(use approve, edit with text, or reject with a reason)") from None
