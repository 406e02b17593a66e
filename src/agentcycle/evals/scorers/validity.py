"""Scorer validity: run scorers on human-labelled cases and measure their agreement.

A labelled case is one (case, output) pair, the scorer to judge it and the human label
(should the scorer pass it?). Agreement is the share of cases where the scorer's pass
or fail equals the label. The set shipped with agentcycle lives in
``benchmarks/data/scorer_validity.yaml`` (see ``benchmarks/scorer_validity.py``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentcycle.errors import DataError, ServiceError
from agentcycle.evals.scoring import ScoreContext, resolve_scorer
from agentcycle.evals.types import Case, Context, Output, Score, ToolCall

# Rule-based scorers (faithfulness's default mode adds MiniLM, still deterministic).
DETERMINISTIC = ("exact", "contains", "keywords", "regex", "json_schema", "context_precision",
                 "context_recall", "faithfulness", "tool_name", "tool_args", "tool_f1",
                 "tool_order", "step_count", "latency_budget", "cost_budget", "token_budget",
                 "pii_leak")

_OUTPUT_KEYS = ("steps", "latency_ms", "cost_usd", "prompt_tokens", "completion_tokens")


@dataclass
class LabelledCase:
    id: str
    scorer: str
    label: bool
    case: Case
    output: Output
    options: dict[str, Any] = field(default_factory=dict)
    note: str = ""


def _contexts(items: list[Any], named: dict[str, dict]) -> list[Context]:
    contexts = []
    for item in items:
        if isinstance(item, str):
            if item not in named:
                raise DataError(f"unknown context '{item}' in the labelled set")
            item = named[item]
        contexts.append(Context(**item))
    return contexts


def _tool_calls(items: list[dict] | None) -> list[ToolCall]:
    return [ToolCall(name=c["name"], arguments=c.get("arguments") or {}) for c in items or []]


def parse_labelled(data: dict[str, Any]) -> list[LabelledCase]:
    named = data.get("contexts") or {}
    cases = []
    for raw in data.get("cases") or []:
        try:
            case = Case(id=raw["id"], input=raw.get("question", ""),
                        reference=raw.get("reference"), keywords=raw.get("keywords", []),
                        reference_sources=raw.get("reference_sources", []),
                        expected_tools=_tool_calls(raw.get("expected_tools")),
                        metadata=raw.get("metadata", {}))
            output = Output(text=raw.get("answer", ""),
                            contexts=_contexts(raw.get("contexts", []), named),
                            tool_calls=_tool_calls(raw.get("tool_calls")),
                            **{k: raw[k] for k in _OUTPUT_KEYS if k in raw})
            cases.append(LabelledCase(raw["id"], raw["scorer"], bool(raw["label"]), case,
                                      output, dict(raw.get("options") or {}),
                                      str(raw.get("note", ""))))
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"bad labelled case {raw.get('id', '?')!r}: {exc}") from None
    return cases


def load_labelled(path: str | Path) -> list[LabelledCase]:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"cannot read the labelled set {path}: {exc}") from None
    return parse_labelled(data or {})


@dataclass
class Judged:
    item: LabelledCase
    score: Score
    error: bool = False  # the scorer failed (a judge call): never counted as agreeing

    @property
    def agrees(self) -> bool:
        return not self.error and self.score.passed == self.item.label


async def score_labelled(items: list[LabelledCase], ctx: ScoreContext, *,
                         scorer: str | None = None, options: dict[str, Any] | None = None,
                         concurrency: int = 4) -> list[Judged]:
    """Score each labelled case with its scorer (or ``scorer`` for all, with extra
    ``options`` such as ``{"mode": "judge"}``)."""
    semaphore = asyncio.Semaphore(concurrency)

    async def one(item: LabelledCase) -> Judged:
        bound = resolve_scorer({"name": scorer or item.scorer, **item.options,
                                **(options or {})})
        async with semaphore:
            try:
                return Judged(item, await bound.score(item.case, item.output, ctx))
            except ServiceError as exc:  # a judge call that failed counts as a miss
                return Judged(item, Score(value=0.0, passed=False,
                                          explanation=f"error: {exc}"), error=True)

    return list(await asyncio.gather(*(one(i) for i in items)))


def agreement(judged: list[Judged]) -> tuple[int, int]:
    """(cases where the scorer agrees with the label, cases)."""
    return sum(j.agrees for j in judged), len(judged)


def by_scorer(items: list[LabelledCase]) -> dict[str, list[LabelledCase]]:
    groups: dict[str, list[LabelledCase]] = {}
    for item in items:
        groups.setdefault(item.scorer, []).append(item)
    return groups
