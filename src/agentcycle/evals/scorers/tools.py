"""Tool-use scorers against ``case.expected_tools``: the right tool, its arguments,
call-level F1, call order, and the number of steps taken."""

from __future__ import annotations

import math
from typing import Any

from agentcycle.errors import ConfigError
from agentcycle.evals.scorers.text import normalize
from agentcycle.evals.scoring import ScoreContext, scorer
from agentcycle.evals.types import Case, Output, Score, ToolCall


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip().replace(",", ""))
        except ValueError:
            return None
    return None


def values_match(expected: Any, actual: Any, *, tolerance: float = 1e-6,
                 exact: bool = False) -> bool:
    """Argument equality: numbers within a relative ``tolerance`` (``"21"`` == 21),
    strings normalized (case, spacing, dashes), lists and dicts element by element.
    ``exact`` compares with ``==`` only."""
    if exact:
        return expected == actual
    a, b = _as_number(expected), _as_number(actual)
    if a is not None and b is not None:
        return math.isclose(a, b, rel_tol=tolerance, abs_tol=tolerance)
    if isinstance(expected, dict) and isinstance(actual, dict):
        return expected.keys() == actual.keys() and all(
            values_match(v, actual[k], tolerance=tolerance) for k, v in expected.items())
    if isinstance(expected, list | tuple) and isinstance(actual, list | tuple):
        return len(expected) == len(actual) and all(
            values_match(x, y, tolerance=tolerance) for x, y in zip(expected, actual, strict=True))
    if isinstance(expected, str) and isinstance(actual, str):
        return normalize(expected) == normalize(actual)
    return expected == actual


def args_score(expected: ToolCall, actual: ToolCall, *, tolerance: float = 1e-6,
               exact: bool = False, strict: bool = False) -> float:
    """The share of expected arguments the actual call matches (``strict``: an extra
    argument counts as a miss too). 1.0 when no arguments are expected."""
    keys = set(expected.arguments) | (set(actual.arguments) if strict else set())
    if not keys:
        return 1.0
    hits = sum(1 for k in keys if k in expected.arguments and k in actual.arguments
               and values_match(expected.arguments[k], actual.arguments[k],
                                tolerance=tolerance, exact=exact))
    return hits / len(keys)


def calls_match(expected: ToolCall, actual: ToolCall, **options: Any) -> bool:
    return expected.name == actual.name and args_score(expected, actual, **options) >= 1.0


def _expected(case: Case, name: str) -> list[ToolCall]:
    if not case.expected_tools:
        raise ConfigError(f"scorer '{name}' needs expected_tools: case '{case.id}' has none")
    return case.expected_tools


@scorer("tool_name", threshold=1.0)
def tool_name(case: Case, output: Output, ctx: ScoreContext, *,
              allow_extra: bool = True) -> Score:
    """The expected tool(s) were called (value: the share of expected names called).
    With ``allow_extra=False`` a call to a tool not expected lowers the value (Jaccard)."""
    expected = {c.name for c in _expected(case, "tool_name")}
    called = {c.name for c in output.tool_calls}
    found = expected & called
    extra = called - expected
    value = len(found) / len(expected) if allow_extra else len(found) / len(expected | called)
    parts = [f"called {sorted(called) or 'no tool'}"]
    if expected - called:
        parts.append(f"missing {sorted(expected - called)}")
    if extra and not allow_extra:
        parts.append(f"unexpected {sorted(extra)}")
    return Score(value=value, passed=value >= 1.0, explanation="; ".join(parts))


@scorer("tool_args", threshold=1.0)
def tool_args(case: Case, output: Output, ctx: ScoreContext, *, tolerance: float = 1e-6,
              exact: bool = False, strict: bool = False) -> Score:
    """For each expected call, the best argument match among the calls of that tool
    (value: the mean; a tool never called scores 0)."""
    expected = _expected(case, "tool_args")
    scores, notes = [], []
    for want in expected:
        same_tool = [c for c in output.tool_calls if c.name == want.name]
        best = max((args_score(want, c, tolerance=tolerance, exact=exact, strict=strict)
                    for c in same_tool), default=0.0)
        scores.append(best)
        if best < 1.0:
            got = [c.arguments for c in same_tool] or "not called"
            notes.append(f"{want.name}: expected {want.arguments}, got {got}")
    value = sum(scores) / len(scores)
    return Score(value=value, passed=value >= 1.0,
                 explanation="arguments match" if not notes else "; ".join(notes)[:400])


@scorer("tool_f1", threshold=1.0)
def tool_f1(case: Case, output: Output, ctx: ScoreContext, *, tolerance: float = 1e-6,
            exact: bool = False) -> Score:
    """Call-level F1: a call counts when its name and arguments match an expected call
    (each expected call matched at most once)."""
    expected, actual = list(case.expected_tools), list(output.tool_calls)
    if not expected and not actual:
        return Score(value=1.0, passed=True, explanation="no tool expected, none called")
    unmatched = list(actual)
    matched = 0
    for want in expected:
        for call in unmatched:
            if calls_match(want, call, tolerance=tolerance, exact=exact):
                unmatched.remove(call)
                matched += 1
                break
    precision = matched / len(actual) if actual else 0.0
    recall = matched / len(expected) if expected else 0.0
    value = 2 * precision * recall / (precision + recall) if matched else 0.0
    return Score(value=value, passed=value >= 1.0,
                 explanation=f"{matched} matched of {len(expected)} expected, "
                             f"{len(actual)} made (P {precision:.2f}, R {recall:.2f})")


def lcs_length(a: list[str], b: list[str]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[-1]))
        previous = current
    return previous[-1]


@scorer("tool_order", threshold=1.0)
def tool_order(case: Case, output: Output, ctx: ScoreContext) -> Score:
    """The expected calls happen in the expected order (other calls may come between):
    value = longest common subsequence of tool names / expected calls."""
    expected = [c.name for c in _expected(case, "tool_order")]
    called = [c.name for c in output.tool_calls]
    value = lcs_length(expected, called) / len(expected)
    return Score(value=value, passed=value >= 1.0,
                 explanation=f"expected {' -> '.join(expected)}; "
                             f"called {' -> '.join(called) or 'nothing'}")


@scorer("step_count", threshold=1.0)
def step_count(case: Case, output: Output, ctx: ScoreContext, *,
               max_steps: int | None = None) -> Score:
    """The agent took at most ``max_steps`` steps (default: the case's
    ``metadata.max_steps``, else one per expected tool call plus the answer).
    Over budget, the value falls as max_steps / steps."""
    limit = max_steps if max_steps is not None else case.metadata.get("max_steps")
    if limit is None:
        limit = len(case.expected_tools) + 1
    limit = int(limit)
    steps = max(output.steps, 0)
    value = 1.0 if steps <= limit else limit / steps
    return Score(value=value, passed=steps <= limit, explanation=f"{steps} steps, max {limit}")
