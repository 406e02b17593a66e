"""Tool-use scorers against ``case.expected_tools``: the right tool, its arguments,
call-level F1, call order, the number of steps taken; and for suites mixing cases that
need a call with cases that need none: valid calls, right tool, exact arguments, the
no-call decision, task success (and ``tool_use_figures`` for a run's figures)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
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


# The four figures of a tool-use suite (valid calls, right tool, exact arguments, no-call
# precision) and task success. A case without expected_tools expects *no* call here (a
# greeting, an out-of-scope question): these scorers, unlike tool_name and tool_args,
# score such cases instead of refusing them, so one suite mixes both kinds.


def _no_call_expected(case: Case, output: Output) -> Score | None:
    """The verdict on a case that expects no call; None when the case expects one."""
    if case.expected_tools:
        return None
    called = [c.name for c in output.tool_calls]
    return Score(value=0.0 if called else 1.0, passed=not called,
                 explanation=f"no call expected; called {called}" if called
                 else "no call expected, none made")


@scorer("valid_tool_calls", threshold=1.0)
def valid_tool_calls(case: Case, output: Output, ctx: ScoreContext, *,
                     tools: list[str] | None = None) -> Score:
    """Every call the agent made was valid: its arguments parsed as JSON, it named an
    offered tool and its arguments validated, i.e. the agent recorded no ``error`` on it
    (and, given ``tools``, the offered names, its name is one). Value: the share of the
    case's calls that were valid; 1 when it made none. The run's valid-call rate per
    call is ``tool_use_figures(...)["valid_call_rate"]``."""
    offered = set(tools) if tools is not None else None
    problems = []
    for call in output.tool_calls:
        error = getattr(call, "error", None)
        if error:
            problems.append(f"{call.name or '?'}: {error}")
        elif offered is not None and call.name not in offered:
            problems.append(f"{call.name or '?'}: not an offered tool")
    if not output.tool_calls:
        return Score(value=1.0, passed=True, explanation="no calls made")
    value = 1 - len(problems) / len(output.tool_calls)
    return Score(value=value, passed=not problems,
                 explanation="; ".join(problems)[:400] if problems
                 else f"{len(output.tool_calls)} valid call(s)")


@scorer("right_tool", threshold=1.0)
def right_tool(case: Case, output: Output, ctx: ScoreContext, *,
               allow_extra: bool = True) -> Score:
    """The agent called the expected tool(s) (``tool_name``), or, on a case that expects
    no call, called none. ``allow_extra=False``: a call to another tool counts against."""
    verdict = _no_call_expected(case, output)
    return verdict or tool_name(case, output, ctx, allow_extra=allow_extra)


def _with_defaults(call: ToolCall, defaults: dict[str, dict[str, Any]]) -> ToolCall:
    return ToolCall(name=call.name, arguments={**defaults.get(call.name, {}), **call.arguments})


@scorer("exact_args", threshold=1.0)
def exact_args(case: Case, output: Output, ctx: ScoreContext, *,
               defaults: dict[str, dict[str, Any]] | None = None, tolerance: float = 1e-6,
               exact: bool = False, strict: bool = False) -> Score:
    """Each expected call was made with the expected arguments (``tool_args``; an
    expected ``arguments: {}`` asks only for the call), or, on a case that expects no
    call, none was made. ``defaults`` (tool -> {parameter: default}) fills the parameters
    a call left out on both sides, so a default-valued parameter need not be written in
    the case, and a call that sets it to something else (``business_days: true`` for a
    calendar-day deadline) is wrong."""
    verdict = _no_call_expected(case, output)
    if verdict:
        return verdict
    if defaults:
        case = case.model_copy(update={"expected_tools": [
            _with_defaults(c, defaults) for c in case.expected_tools]})
        output = output.model_copy(update={"tool_calls": [
            _with_defaults(c, defaults) for c in output.tool_calls]})
    return tool_args(case, output, ctx, tolerance=tolerance, exact=exact, strict=strict)


def _check_defaults(defaults: Any = None, **_: Any) -> None:
    if defaults is not None and not (isinstance(defaults, dict) and all(
            isinstance(v, dict) for v in defaults.values())):
        raise ConfigError("scorer 'exact_args': defaults must map each tool's name to "
                          "{parameter: default}, e.g. {compute_deadline: {months: 0}}")


exact_args.check = _check_defaults  # type: ignore[attr-defined]  # checked at suite load


@scorer("no_call", threshold=1.0)
def no_call(case: Case, output: Output, ctx: ScoreContext) -> Score:
    """The decision whether to call a tool at all was right: no call where the case
    expects none, at least one where it expects some.

    Per case this is a pass or a fail; the run's figures come from it by tag (cases
    tagged ``no-call`` expect no call, ``call`` the others): ``tag/no-call/no_call.mean``
    is no-call recall (of the cases needing no call, the share left uncalled), and
    no-call precision (of the cases the agent left uncalled, the share needing no call)
    is TN / (TN + FN) with TN = that mean x the no-call cases and FN = (1 -
    ``tag/call/no_call.mean``) x the call cases; ``tool_use_figures`` computes both."""
    called = bool(output.tool_calls)
    wanted = bool(case.expected_tools)
    right = called == wanted
    what = "a call" if wanted else "no call"
    return Score(value=float(right), passed=right,
                 explanation=f"{what} expected; {len(output.tool_calls)} made")


_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _fact_in(fact: str, text: str) -> bool:
    """A figure matches a whole number of the text ("1800" is in "1,800.00 crowns", not in
    "18000"); any other fact is a substring of the normalized text."""
    fact = _THOUSANDS.sub("", normalize(fact))
    if _NUMBER.fullmatch(fact):
        return any(float(n) == float(fact) for n in _NUMBER.findall(text))
    return fact in text


@scorer("task_success", threshold=1.0)
def task_success(case: Case, output: Output, ctx: ScoreContext) -> Score:
    """The answer holds every reference keyword, as ``keywords`` checks, but a keyword
    that is a figure must be a whole number of the answer: "1,800" and "1800.0" match
    1800, "18000" and "728" do not match 1800 and 28. A case without keywords (a
    greeting) passes: there is no fact to check, and whether the agent rightly kept from
    calling a tool is ``no_call``'s to judge. Value: the share of keywords present."""
    if not case.keywords:
        return Score(value=1.0, passed=True, explanation="no key facts to check")
    text = _THOUSANDS.sub("", normalize(output.text))
    missing = [k for k in case.keywords if not _fact_in(k, text)]
    value = 1 - len(missing) / len(case.keywords)
    return Score(value=value, passed=not missing,
                 explanation=f"missing {missing!r}" if missing else "every key fact present")


def tool_use_figures(results: list[Any], cases: list[Case]) -> dict[str, float | None]:
    """A run's tool-use figures from its case results (``EvalRun.results``) and the suite's
    cases: ``valid_call_rate`` (per call), ``right_tool`` and ``exact_args`` (share of
    the cases expecting a call that passed), ``no_call_precision`` and
    ``no_call_recall``, ``task_success`` (share of cases), with the counts behind them.
    A figure without cases to measure it on is None. An errored case (the model failed,
    or ran out of steps without an answer) counts as failed, as in the run's metrics;
    its calls, if any were recorded, are not judged."""
    expects = {c.id: bool(c.expected_tools) for c in cases}
    scored = [r for r in results if r.id in expects]
    ok = [r for r in scored if r.error is None]
    calls = sum(len(r.output.tool_calls) for r in ok)
    valid = sum(r.scores["valid_tool_calls"].value * len(r.output.tool_calls)
                for r in ok if "valid_tool_calls" in r.scores)
    call_cases = [r for r in scored if expects[r.id]]
    silent = [r for r in ok if not r.output.tool_calls]
    quiet_cases = [r for r in scored if not expects[r.id]]

    def share(items: list[Any], test: Callable[[Any], bool]) -> float | None:
        return sum(map(test, items)) / len(items) if items else None

    def passed(name: str) -> Callable[[Any], bool]:
        return lambda r: r.error is None and name in r.scores and r.scores[name].passed

    return {
        "valid_call_rate": valid / calls if calls else None,
        "right_tool": share(call_cases, passed("right_tool")),
        "exact_args": share(call_cases, passed("exact_args")),
        "no_call_precision": share(silent, lambda r: not expects[r.id]),
        "no_call_recall": share(quiet_cases,
                                lambda r: r.error is None and not r.output.tool_calls),
        "task_success": share(scored, passed("task_success")),
        "cases": len(scored), "call_cases": len(call_cases),
        "no_call_cases": len(quiet_cases), "calls": calls, "uncalled_cases": len(silent),
        "errors": len(scored) - len(ok),
    }
