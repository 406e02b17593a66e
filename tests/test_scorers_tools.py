"""The tool-use scorers for suites that mix call and no-call cases (valid_tool_calls,
right_tool, exact_args, no_call, task_success) and tool_use_figures, on hand-built
outputs, then through the real runner on the legal-tools suite with a scripted agent."""

from __future__ import annotations

import asyncio

import pytest

from agentcycle.errors import ConfigError
from agentcycle.evals.results import CaseResult
from agentcycle.evals.scorers.tools import tool_use_figures
from agentcycle.evals.scoring import ScoreContext, resolve_scorer
from agentcycle.evals.types import Case, Output, ToolCall

DEADLINE_DEFAULTS = {"compute_deadline": {"days": 0, "business_days": False, "months": 0}}


def run(name, output, case, **options):
    bound = resolve_scorer({"name": name, **options})
    return asyncio.run(bound.score(case, output, ScoreContext()))


def call(name, error=None, **arguments):
    return ToolCall(name=name, arguments=arguments, error=error)


def expecting(*calls, **fields):
    return Case(id=fields.pop("id", "c"), input="q", expected_tools=list(calls), **fields)


QUIET = Case(id="hi", input="Hello!", tags=["no-call"])
DEADLINE = expecting(call("compute_deadline", start_date="2025-06-30", days=21))


def test_valid_tool_calls_counts_error_marked_and_unoffered_calls():
    assert run("valid_tool_calls", Output(), QUIET).value == 1.0  # nothing to get wrong
    good = call("get_section", number="8")
    bad_json = call("get_section", error="the arguments for get_section are not valid JSON")
    half = run("valid_tool_calls", Output(tool_calls=[good, bad_json]), DEADLINE)
    assert half.value == 0.5 and not half.passed and "not valid JSON" in half.explanation
    stray = Output(tool_calls=[good, call("send_email", to="x")])
    # Without the offered names, only the agent's markers count; with them, a name too.
    assert run("valid_tool_calls", stray, DEADLINE).passed
    named = run("valid_tool_calls", stray, DEADLINE, tools=["get_section"])
    assert named.value == 0.5 and "send_email: not an offered tool" in named.explanation


def test_right_tool_on_call_and_no_call_cases():
    assert run("right_tool", Output(), QUIET).passed
    chatty = run("right_tool", Output(tool_calls=[call("get_section", number="1")]), QUIET)
    assert not chatty.passed and "no call expected" in chatty.explanation
    assert not run("right_tool", Output(), DEADLINE).passed
    searched_first = Output(tool_calls=[call("search_corpus", query="deposit"),
                                        call("compute_deadline", start_date="2025-06-30")])
    assert run("right_tool", searched_first, DEADLINE).passed  # the arguments are not its job
    assert run("right_tool", searched_first, DEADLINE, allow_extra=False).value == 0.5
    both = expecting(call("get_section"), call("compute_deadline"))
    assert run("right_tool", Output(tool_calls=[call("get_section", number="11")]),
               both).value == 0.5


def test_exact_args_fills_defaults_on_both_sides():
    made = Output(tool_calls=[call("compute_deadline", start_date="2025-06-30", days="21")])
    assert run("exact_args", made, DEADLINE, defaults=DEADLINE_DEFAULTS).passed  # "21" == 21
    explicit = Output(tool_calls=[call("compute_deadline", start_date="2025-06-30", days=21,
                                       business_days=False)])
    assert run("exact_args", explicit, DEADLINE, defaults=DEADLINE_DEFAULTS).passed
    working = Output(tool_calls=[call("compute_deadline", start_date="2025-06-30", days=21,
                                      business_days=True)])
    # The hole defaults close: tool_args ignores a parameter the case leaves out.
    assert run("exact_args", working, DEADLINE).passed
    wrong = run("exact_args", working, DEADLINE, defaults=DEADLINE_DEFAULTS)
    assert not wrong.passed and "business_days" in wrong.explanation
    other_day = Output(tool_calls=[call("compute_deadline", start_date="2025-06-29", days=21)])
    assert run("exact_args", other_day, DEADLINE, defaults=DEADLINE_DEFAULTS).value < 1.0


def test_exact_args_free_text_and_no_call_cases():
    search = expecting(call("search_corpus"))  # `arguments: {}`: any query
    assert run("exact_args", Output(tool_calls=[call("search_corpus", query="late fee",
                                                     top_k=5)]), search).passed
    assert not run("exact_args", Output(tool_calls=[call("get_section", number="18")]),
                   search).passed
    assert run("exact_args", Output(), QUIET).passed
    assert not run("exact_args", Output(tool_calls=[call("search_corpus", query="hi")]),
                   QUIET).passed


def test_exact_args_rejects_bad_defaults_when_the_suite_loads():
    with pytest.raises(ConfigError, match="defaults must map each tool's name"):
        resolve_scorer({"name": "exact_args", "defaults": {"compute_deadline": 0}})
    with pytest.raises(ConfigError, match="bad options"):
        resolve_scorer({"name": "exact_args", "defualts": {}})


def test_no_call_judges_the_decision_to_call_at_all():
    some = Output(tool_calls=[call("get_section", number="8")])
    assert run("no_call", Output(), QUIET).passed  # true negative
    assert not run("no_call", some, QUIET).passed  # called for a greeting
    assert not run("no_call", Output(), DEADLINE).passed  # missed a needed call
    wrong_tool = Output(tool_calls=[call("days_between", start_date="x", end_date="y")])
    assert run("no_call", wrong_tool, DEADLINE).passed  # which tool is right_tool's question


def test_task_success_checks_keywords_and_reads_thousands_either_way():
    case = expecting(call("max_deposit", monthly_rent=1200), keywords=["1800", "§ 8"])
    assert run("task_success", Output(text="At most 1,800 crowns (§ 8)."), case).passed
    written = expecting(call("max_deposit"), keywords=["1,800"])
    assert run("task_success", Output(text="1800 crowns"), written).passed
    partial = run("task_success", Output(text="1800 crowns"), case)
    assert partial.value == 0.5 and "§ 8" in partial.explanation
    # A figure is a whole number of the answer, not a run of its digits.
    assert not run("task_success", Output(text="18000 crowns"), written).passed
    assert not run("task_success", Output(text="728 crowns"), expecting(keywords=["28"])).passed
    assert run("task_success", Output(text="Up 28 crowns, to 728."),
               expecting(keywords=["28"])).passed
    assert run("task_success", Output(text="1,662.50 crowns"),
               expecting(keywords=["1662.5"])).passed
    assert run("task_success", Output(text="By 2025-07-21."),
               expecting(keywords=["2025-07-21"])).passed
    assert run("task_success", Output(text="Hi!"), QUIET).passed  # nothing to check


def _result(case, output, names=("valid_tool_calls", "right_tool", "exact_args", "no_call",
                                 "task_success"), error=None):
    scores = {} if error else {n: run(n, output, case) for n in names}
    return CaseResult(id=case.id, input=case.question, output=output, scores=scores,
                      error=error, passed=all(s.passed for s in scores.values()))


def test_tool_use_figures_from_case_results():
    a = expecting(call("get_section", number="8"), id="a", keywords=["1.5"])
    b = expecting(call("max_deposit", monthly_rent=1000), id="b", keywords=["1500"])
    c = Case(id="c", input="Hello!")
    d = Case(id="d", input="Who are you?")
    e = expecting(call("get_section", number="9"), id="e")
    results = [
        _result(a, Output(text="1.5 months", tool_calls=[call("get_section", number="8")])),
        _result(b, Output(text="I don't know")),  # a false no-call
        _result(c, Output(text="Hello!")),  # a true no-call
        _result(d, Output(text="I am...", tool_calls=[
            call("search_corpus", query="who"), call("nope", error="unknown tool 'nope'")])),
        _result(e, Output(), error="model call failed"),  # errored: counted as failed
    ]
    figures = tool_use_figures(results, [a, b, c, d, e])
    assert figures == {
        "valid_call_rate": pytest.approx(2 / 3), "right_tool": pytest.approx(1 / 3),
        "exact_args": pytest.approx(1 / 3), "no_call_precision": 0.5, "no_call_recall": 0.5,
        "task_success": 0.6, "cases": 5, "call_cases": 3, "no_call_cases": 2, "calls": 3,
        "uncalled_cases": 2, "errors": 1}
    # An errored no-call case is a failed one too (a step limit: it kept calling tools).
    f = Case(id="f", input="Thanks!")
    quiet = tool_use_figures([results[2], _result(f, Output(), error="step limit")], [c, f])
    assert quiet["no_call_recall"] == 0.5 and quiet["errors"] == 1
    # Nothing to measure a figure on: None, not a made-up 0 or 1.
    only_calls = tool_use_figures(results[:1], [a])
    assert only_calls["no_call_precision"] is None and only_calls["no_call_recall"] is None
    assert tool_use_figures([], [a])["valid_call_rate"] is None


def test_the_legal_tools_suite_through_the_runner(tmp_path):
    """A scripted agent: right on every case but two (it greets with a tool call, and
    answers one deadline question without calling). The run's metrics, by tag, and
    tool_use_figures give the four figures."""
    from agentcycle.evals.runner import run_suite_sync
    from agentcycle.evals.suite import load_suite
    from agentcycle.evals.targets import CallableTarget
    from agentcycle.examples.legal import legal_corpus_dir

    suite = load_suite(legal_corpus_dir().parent / "suites" / "legal-tools.yaml")
    by_question = {c.question: c for c in suite.cases}

    def agent(question: str) -> Output:
        case = by_question[question]
        if case.id == "hello":
            return Output(text="Hello!", tool_calls=[call("search_corpus", query="hello")])
        if case.id == "deposit-return":
            return Output(text="Probably within a month.")
        return Output(text=case.reference or "Hi, I answer questions on the tenancy act.",
                      tool_calls=case.expected_tools, steps=len(case.expected_tools) + 1)

    run = run_suite_sync(suite, CallableTarget(agent, key="scripted"), concurrency=4,
                         folder=tmp_path / "run")
    n_quiet = sum(not c.expected_tools for c in suite.cases)
    n_call = len(suite.cases) - n_quiet
    assert len(run.results) == n_call + n_quiet and run.metrics["errors"] == 0
    assert run.metrics["valid_tool_calls.mean"] == 1.0
    assert run.metrics["accuracy"] == pytest.approx((n_call + n_quiet - 2) / (n_call + n_quiet))
    assert run.tags["no-call"]["no_call.mean"] == pytest.approx((n_quiet - 1) / n_quiet)
    assert run.tags["call"]["right_tool.mean"] == pytest.approx((n_call - 1) / n_call)
    figures = tool_use_figures(run.results, suite.cases)
    # Uncalled: every no-call case but one rightly, 1 deadline question wrongly.
    assert figures["no_call_precision"] == pytest.approx((n_quiet - 1) / n_quiet)
    assert figures["no_call_recall"] == pytest.approx((n_quiet - 1) / n_quiet)
    assert figures["exact_args"] == pytest.approx((n_call - 1) / n_call)
    assert figures["task_success"] == pytest.approx((n_call + n_quiet - 1) / (n_call + n_quiet))


def test_an_errored_tool_case_is_a_failed_one_in_the_paired_verdicts():
    """The demo's paired test over tool cases: a case that ran out of steps is a failure
    of the model that hit it, not a case left out."""
    from types import SimpleNamespace

    from agentcycle.report import ToolEval

    a = expecting(call("get_section", number="8"), id="a")
    e = expecting(call("get_section", number="9"), id="e")
    right = Output(tool_calls=[call("get_section", number="8")])
    results = [_result(a, right), _result(e, right, error="step limit reached")]
    verdicts = ToolEval("tuned", SimpleNamespace(results=results), [a, e]).passed()
    assert verdicts == {"a": True, "e": False}
