"""Reviewers: what decides whether a draft goes to the human or back for revision.

A reviewer is any callable ``(task, draft, sources) -> Review``. The default,
:class:`RuleReviewer`, is deterministic (length, required terms, citations);
:class:`LLMReviewer` asks a model through the router.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from agentcycle.errors import ConfigError


@dataclass
class Review:
    ok: bool
    notes: list[str] = field(default_factory=list)
    # The reviewer's own model call, when it made one (its tokens count in the run's usage).
    usage: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "notes": list(self.notes)}


class Reviewer(Protocol):
    def __call__(self, task: str, draft: str, sources: Sequence[dict[str, Any]]) -> Review: ...


# "[1]", "[2, 3]" (numbered sources) or "§ 7" (a statute's sections).
CITATION = r"\[\d+(?:,\s*\d+)*\]|§\s*\d+"


class RuleReviewer:
    """Checks a draft's length, the terms it must contain and, optionally, a citation."""

    def __init__(self, *, min_chars: int = 1, max_chars: int = 4000,
                 required_terms: Sequence[str] = (), require_citation: bool = False,
                 citation_pattern: str = CITATION):
        if min_chars < 0 or max_chars < max(min_chars, 1):
            raise ConfigError(f"reviewer lengths must satisfy 0 <= min_chars <= max_chars "
                              f"(got {min_chars}, {max_chars})")
        try:
            self.citation = re.compile(citation_pattern)
        except re.error as exc:
            raise ConfigError(f"invalid citation pattern '{citation_pattern}': {exc}") from None
        self.min_chars, self.max_chars = min_chars, max_chars
        self.required_terms = [t for t in required_terms if t.strip()]
        self.require_citation = require_citation

    def __call__(self, task: str, draft: str, sources: Sequence[dict[str, Any]] = ()) -> Review:
        text = draft.strip()
        notes = []
        if len(text) < self.min_chars:
            notes.append(f"too short: {len(text)} characters, at least {self.min_chars} needed")
        if len(text) > self.max_chars:
            notes.append(f"too long: {len(text)} characters, at most {self.max_chars} allowed")
        missing = [t for t in self.required_terms if t.lower() not in text.lower()]
        if missing:
            notes.append("must mention: " + ", ".join(missing))
        if self.require_citation and not self.citation.search(text):
            notes.append("cite a source, e.g. [1]" if sources else "cite a source")
        return Review(ok=not notes, notes=notes)


_LLM_PROMPT = ("You review answers. If the answer fully and correctly answers the task, reply "
               "exactly OK. Otherwise reply with the problems, one per line.")


class LLMReviewer:
    """Asks a model (through the router) whether the draft answers the task."""

    def __init__(self, router: Any, *, max_tokens: int = 96, route: str | None = None):
        self.router, self.max_tokens, self.route = router, max_tokens, route

    def __call__(self, task: str, draft: str, sources: Sequence[dict[str, Any]] = ()) -> Review:
        context = "\n".join(f"[{i}] {s.get('text', '')}" for i, s in enumerate(sources, 1))
        user = f"Task: {task}\n\nAnswer: {draft}" + (f"\n\nSources:\n{context}" if context else "")
        completion = self.router.complete(
            [{"role": "system", "content": _LLM_PROMPT}, {"role": "user", "content": user}],
            max_tokens=self.max_tokens, temperature=0, route=self.route)
        verdict = completion.text.strip()
        ok = re.match(r"^\W*ok\b", verdict, re.IGNORECASE) is not None
        notes = [] if ok else [line.strip("-* ").strip() for line in verdict.splitlines()
                               if line.strip()] or ["the reviewer gave no reason"]
        return Review(ok=ok, notes=notes, usage=usage_of(completion))


def usage_of(completion: Any) -> dict[str, Any]:
    """A router Completion's accounting as plain data (checkpoints store plain data)."""
    return {"model": completion.model, "backend": completion.backend,
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
            "cost_usd": completion.cost_usd, "reason": completion.reason,
            "latency_ms": round(completion.latency_ms, 1)}
