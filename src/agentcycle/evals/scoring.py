"""Scorer registry: the ``@scorer`` decorator, and how a suite names its scorers.

A scorer is a function ``(case, output, ctx, **options) -> Score`` (sync or async),
registered under a name. A suite lists scorers by name, with options::

    scorers:
      - contains
      - {name: regex, pattern: "\\d+ days"}
      - {name: llm_judge, rubric: "Is the answer correct and grounded?", threshold: 0.7}

``resolve_scorer`` turns one such entry into a ``BoundScorer`` the runner calls.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agentcycle.errors import ConfigError
from agentcycle.evals.types import Case, Output, Score

ScorerFn = Callable[..., Any]  # (case, output, ctx, **options) -> Score | Awaitable[Score]

_REGISTRY: dict[str, tuple[ScorerFn, float]] = {}


@dataclass
class ScoreContext:
    """Shared, lazily built resources scorers may need (an embedder, a judge model)."""

    settings: Any = None
    embedder: Any = None
    # async (messages, model) -> text: how the LLM judge reaches a model (the router).
    judge: Callable[..., Any] | None = None
    judge_model: str | None = None
    judge_is_small_local: bool = False
    extras: dict[str, Any] = field(default_factory=dict)


def scorer(name: str | None = None, *, threshold: float = 0.5) -> Callable[[ScorerFn], ScorerFn]:
    """Register a custom scorer under ``name`` (default: the function's name)::

        @scorer(threshold=1.0)
        def cites_a_section(case, output, ctx):
            return Score(value=float("§" in output.text), passed="§" in output.text)
    """

    def register(fn: ScorerFn) -> ScorerFn:
        _REGISTRY[name or fn.__name__] = (fn, threshold)
        return fn

    return register


def registered_scorers() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


@dataclass
class BoundScorer:
    """A registered scorer with the options and threshold one suite gave it."""

    name: str
    fn: ScorerFn
    threshold: float
    options: dict[str, Any] = field(default_factory=dict)

    async def score(self, case: Case, output: Output, ctx: ScoreContext) -> Score:
        result = self.fn(case, output, ctx, **self.options)
        if inspect.isawaitable(result):
            result = await result
        threshold = case.thresholds.get(self.name, self.threshold)
        # Scorers report a value; the pass mark is the suite's (or the case's) to set.
        return Score(value=result.value, passed=result.value >= threshold,
                     explanation=result.explanation)


def resolve_scorer(spec: str | dict[str, Any]) -> BoundScorer:
    """One suite entry (a name, or a mapping with ``name`` and options) -> a BoundScorer."""
    _load_builtins()
    options = dict(spec) if isinstance(spec, dict) else {"name": spec}
    name = options.pop("name", None)
    if not isinstance(name, str):
        raise ConfigError(f"a scorer entry needs a 'name' (got {spec!r})")
    if name not in _REGISTRY:
        raise ConfigError(f"unknown scorer '{name}' (known: {', '.join(sorted(_REGISTRY))})")
    fn, default_threshold = _REGISTRY[name]
    try:
        threshold = float(options.pop("threshold", default_threshold))
    except (TypeError, ValueError):
        raise ConfigError(f"scorer '{name}': threshold must be a number") from None
    _check_options(name, fn, options)
    return BoundScorer(name, fn, threshold, options)


def _check_options(name: str, fn: ScorerFn, options: dict[str, Any]) -> None:
    """Unknown or bad options fail when the suite loads, before any model call: at
    scoring time they would mark every case errored, one by one."""
    try:
        inspect.signature(fn).bind(None, None, None, **options)
    except TypeError as exc:
        raise ConfigError(f"scorer '{name}': bad options {sorted(options)}: {exc}") from None
    check = getattr(fn, "check", None)
    if check is not None:
        check(**options)


def _load_builtins() -> None:
    # Importing the built-in scorer modules registers them (the decorator runs).
    import agentcycle.evals.scorers  # noqa: F401
