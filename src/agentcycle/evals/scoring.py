"""Scorer registry: the ``@scorer`` decorator, and how a suite names its scorers.

A scorer is a function ``(case, output, ctx, **options) -> Score`` (sync or async),
registered under a name. A suite lists scorers by name, with options::

    scorers:
      - contains
      - {name: regex, pattern: "\\d+ days"}
      - {name: llm_judge, rubric: "Is the answer correct and grounded?", threshold: 0.7}
      - my_scorers.py:cites_a_section       # a function beside the suite
      - {name: my_pkg.scoring:tone, threshold: 0.8}
      - cites                               # an entry point of agentcycle.scorers

``resolve_scorer`` turns one such entry into a ``BoundScorer`` the runner calls.

The built-in scorers import this module (for ``@scorer``), so it never imports them:
look names up through :mod:`agentcycle.evals.scorers`, which registers them first.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agentcycle import plugins
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
    """Registered scorers and the entry points of ``agentcycle.scorers`` (not loaded)."""
    return sorted({*_REGISTRY, *plugins.entry_point_names(plugins.SCORERS)})


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
        if not isinstance(result, Score):
            raise TypeError(f"it returned {type(result).__name__}, not a Score(value=...)")
        threshold = case.thresholds.get(self.name, self.threshold)
        # Scorers report a value; the pass mark is the suite's (or the case's) to set.
        return Score(value=result.value, passed=result.value >= threshold,
                     explanation=result.explanation)


def resolve_scorer(spec: str | dict[str, Any], base_dir: Any = None) -> BoundScorer:
    """One suite entry (a name, or a mapping with ``name`` and options) -> a BoundScorer.

    The name is a registered scorer, an entry point of ``agentcycle.scorers``, or a
    ``module:function`` / ``file.py:function`` reference (relative to ``base_dir``)."""
    options = dict(spec) if isinstance(spec, dict) else {"name": spec}
    name = options.pop("name", None)
    if not isinstance(name, str):
        raise ConfigError(f"a scorer entry needs a 'name' (got {spec!r})")
    name, fn, default_threshold = find_scorer(name, base_dir)
    try:
        threshold = float(options.pop("threshold", default_threshold))
    except (TypeError, ValueError):
        raise ConfigError(f"scorer '{name}': threshold must be a number") from None
    _check_options(name, fn, options)
    return BoundScorer(name, fn, threshold, options)


def find_scorer(name: str, base_dir: Any = None) -> tuple[str, ScorerFn, float]:
    """(the name results use, the function, its default threshold)."""
    if name in _REGISTRY:
        return (name, *_REGISTRY[name])
    if plugins.is_reference(name):
        fn = plugins.load_object(name, base_dir, kind="function")
    else:
        fn = plugins.entry_point_object(plugins.SCORERS, name)
        if fn is None:
            known = ", ".join(registered_scorers()) or (
                "none: import agentcycle.evals.scorers to register the built-ins")
            raise ConfigError(f"unknown scorer '{name}' (known: {known}; or "
                              "module:function, file.py:function)")
    if not callable(fn) or isinstance(fn, type):
        what = f"the class {fn.__name__}" if isinstance(fn, type) else f"a {type(fn).__name__}"
        raise ConfigError(f"scorer '{name}' is {what}, not a function "
                          "(case, output, ctx, **options) -> Score")
    # A function registered with @scorer keeps its threshold, and its name for a ref.
    own_name, threshold = next(((n, t) for n, (f, t) in _REGISTRY.items() if f is fn),
                               (getattr(fn, "__name__", name.rpartition(":")[2]), 0.5))
    # Results and gates use a short name: an entry point's own, else the function's.
    return (own_name if plugins.is_reference(name) else name), fn, threshold


def _check_options(name: str, fn: ScorerFn, options: dict[str, Any]) -> None:
    """Unknown or bad options fail when the suite loads, before any model call: at
    scoring time they would mark every case errored, one by one."""
    signature = inspect.signature(fn)
    try:
        signature.bind_partial(None, None, None)
    except TypeError:  # the function itself, not the options, is wrong
        raise ConfigError(f"scorer '{name}' takes {signature}: a scorer is "
                          "(case, output, ctx, **options) -> Score") from None
    try:
        signature.bind(None, None, None, **options)
    except TypeError as exc:
        raise ConfigError(f"scorer '{name}': bad options {sorted(options)}: {exc}") from None
    check = getattr(fn, "check", None)
    if check is not None:
        check(**options)
