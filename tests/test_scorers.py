"""Unit tests of the built-in scorers: text, tools, budgets, retrieval (see also
test_scorers_judge.py and test_scorers_grounding.py)."""

import asyncio

import pytest

from agentcycle.errors import ConfigError
from agentcycle.evals.scorers import exact_match, keyword_match
from agentcycle.evals.scoring import ScoreContext, registered_scorers, resolve_scorer, scorer
from agentcycle.evals.types import Case, Context, Output, Score, ToolCall


def run(name, output, case=None, **options):
    bound = resolve_scorer({"name": name, **options})
    case = case or Case(id="c", input="q")
    output = output if isinstance(output, Output) else Output(text=output)
    return asyncio.run(bound.score(case, output, ScoreContext()))


def test_keyword_match_normalizes_case_space_and_dashes():
    assert keyword_match("Within 21  DAYS of the end (§ 7).", ["21 days"])
    assert keyword_match("Use Form T\u20137.", ["Form T-7"])
    assert not keyword_match("Within 12 days.", ["21 days"])
    assert not keyword_match("anything", [])
    assert keyword_match("1.5 months and 2%", ["1.5 months", "2%"])
    assert not keyword_match("1.5 months", ["1.5 months", "2%"])


def test_exact_match_ignores_punctuation_and_case():
    assert exact_match("Within 21 days.", "within 21 days")
    assert not exact_match("Within 21 days, maybe.", "within 21 days")


def test_every_issue_scorer_is_registered():
    assert set(registered_scorers()) >= {
        "exact", "contains", "keywords", "regex", "json_schema", "similarity", "llm_judge",
        "context_precision", "context_recall", "faithfulness", "tool_name", "tool_args",
        "tool_f1", "tool_order", "step_count", "latency_budget", "cost_budget",
        "token_budget", "pii_leak"}


def test_exact_and_contains():
    case = Case(id="c", input="q", reference="within 21 days")
    assert run("exact", "Within 21 days.", case).passed
    assert not run("exact", "Within 21 days.", case, strict=True).passed
    assert run("contains", "It is within 21 days (§ 11).", case).passed
    score = run("contains", "Form T-4 only", value=["Form T-4", "copy"])
    assert score.value == 0.5 and not score.passed and "copy" in score.explanation
    assert run("contains", "form t\u20134", value="Form T-4").passed
    assert not run("contains", "form t-4", value="Form T-4", case_sensitive=True).passed
    assert run("contains", "34 days", value=["30 days", "34 days"], any_of=True).passed
    with pytest.raises(ConfigError, match="needs a reference"):
        run("exact", "x")


def test_keywords_value_is_the_share_of_key_facts():
    case = Case(id="c", input="q", keywords=["25 crowns", "3 late fees"])
    score = run("keywords", "At most 25 crowns.", case)
    assert score.value == 0.5 and not score.passed and "3 late fees" in score.explanation
    assert run("keywords", "25 crowns, and 3 late fees a year", case).passed


def test_keywords_caps_the_answer_length_so_pasting_the_passage_fails():
    case = Case(id="c", input="q", keywords=["25 crowns"])
    pasted = "The Act says many things. " * 10 + "The fee is at most 25 crowns."
    assert run("keywords", "At most 25 crowns.", case, max_words=40).passed
    score = run("keywords", pasted, case, max_words=40)
    assert not score.passed and "too long" in score.explanation
    # a per-case threshold overrides the suite's
    lenient = Case(id="c", input="q", keywords=case.keywords, thresholds={"keywords": 0.5})
    assert run("keywords", "At most 25 crowns.", lenient).passed


def test_regex_options_and_bad_patterns():
    assert run("regex", "Within 9 days (§ 9).", pattern=r"§\s*\d+").passed
    assert not run("regex", "Within 9 days.", pattern=r"§\s*\d+").passed
    assert run("regex", " Yes ", pattern="yes|no", flags="i", full=True).passed
    assert not run("regex", "Yes, if agreed.", pattern="yes|no", flags="i", full=True).passed
    assert not run("regex", "As an AI, I", pattern="as an ai", flags="i", negate=True).passed
    with pytest.raises(ConfigError, match="bad pattern"):
        run("regex", "x", pattern="(")
    with pytest.raises(ConfigError, match="needs a pattern"):
        run("regex", "x")


SCHEMA = {"type": "object", "required": ["section", "days"],
          "properties": {"section": {"type": "integer"}, "days": {"type": "integer"}}}


def test_json_schema_finds_json_in_prose_and_reports_the_error():
    assert run("json_schema", '{"section": 11, "days": 21}', schema=SCHEMA).passed
    fenced = 'Sure:\n```json\n{"section": 9, "days": 9}\n```'
    assert run("json_schema", fenced, schema=SCHEMA).passed
    assert run("json_schema", 'The answer is {"section": 9, "days": 9}. Done.',
               schema=SCHEMA).passed
    bad = run("json_schema", '{"section": "11", "days": 21}', schema=SCHEMA)
    assert not bad.passed and "section" in bad.explanation
    assert "no JSON" in run("json_schema", "Section 9.", schema=SCHEMA).explanation
    with pytest.raises(ConfigError, match="invalid schema"):
        run("json_schema", "{}", schema={"type": "no-such-type"})


def calls(*items):
    return [ToolCall(name=n, arguments=a) for n, a in items]


def tool_case(*expected):
    return Case(id="t", input="q", expected_tools=calls(*expected))


def test_tool_name_and_args():
    case = tool_case(("get_section", {"number": 9}))
    assert run("tool_name", Output(tool_calls=calls(("get_section", {}))), case).passed
    wrong = run("tool_name", Output(tool_calls=calls(("search_statute", {}))), case)
    assert wrong.value == 0 and "missing ['get_section']" in wrong.explanation
    extra = Output(tool_calls=calls(("get_section", {}), ("send_email", {})))
    assert run("tool_name", extra, case).passed
    assert run("tool_name", extra, case, allow_extra=False).value == 0.5
    assert run("tool_args", Output(tool_calls=calls(("get_section", {"number": "9"}))),
               case).passed
    assert not run("tool_args", Output(tool_calls=calls(("get_section", {"number": 19}))),
                   case).passed
    assert not run("tool_args", Output(tool_calls=calls(("get_section", {"number": "9"}))),
                   case, exact=True).passed
    penalty = tool_case(("compute_penalty", {"deposit": 1200.0, "months": 3}))
    got = Output(tool_calls=calls(("compute_penalty", {"deposit": "1,200", "months": 3,
                                                       "currency": "crowns"})))
    assert run("tool_args", got, penalty).passed
    assert run("tool_args", got, penalty, strict=True).value == pytest.approx(2 / 3)
    near = Output(tool_calls=calls(("compute_penalty", {"deposit": 1200.4, "months": 3})))
    assert not run("tool_args", near, penalty).passed
    assert run("tool_args", near, penalty, tolerance=0.01).passed


def test_tool_f1_order_and_steps():
    case = tool_case(("get_section", {"number": 9}), ("get_section", {"number": 11}))
    half = run("tool_f1", Output(tool_calls=calls(("get_section", {"number": 9}),
                                                  ("get_section", {"number": 12}))), case)
    assert half.value == pytest.approx(0.5) and not half.passed
    assert run("tool_f1", Output(), Case(id="n", input="q")).passed  # none expected, none made
    order = tool_case(("search_statute", {}), ("get_section", {}), ("send_email", {}))
    swapped = Output(tool_calls=calls(("search_statute", {}), ("send_email", {}),
                                      ("get_section", {})))
    assert run("tool_order", swapped, order).value == pytest.approx(2 / 3)
    retried = Output(tool_calls=calls(("search_statute", {}), ("search_statute", {}),
                                      ("get_section", {}), ("send_email", {})))
    assert run("tool_order", retried, order).passed
    assert run("step_count", Output(steps=3), max_steps=3).passed
    over = run("step_count", Output(steps=6), max_steps=3)
    assert over.value == 0.5 and not over.passed
    # default budget: one step per expected call plus the answer
    assert run("step_count", Output(steps=4), order).passed
    assert not run("step_count", Output(steps=5), order).passed


def test_budgets():
    assert run("latency_budget", Output(latency_ms=900), max_ms=1000).passed
    slow = run("latency_budget", Output(latency_ms=2000), max_ms=1000)
    assert slow.value == 0.5 and not slow.passed
    case = Case(id="c", input="q", metadata={"max_usd": 0.001})
    assert not run("cost_budget", Output(cost_usd=0.002), case).passed
    assert run("token_budget", Output(prompt_tokens=300, completion_tokens=50),
               max_tokens=64, count="completion").passed
    assert not run("token_budget", Output(prompt_tokens=300, completion_tokens=50),
                   max_tokens=64).passed
    with pytest.raises(ConfigError, match="needs a budget"):
        run("latency_budget", Output(latency_ms=1))


def test_context_precision_is_rank_aware_and_recall_counts_sources():
    case = Case(id="c", input="q", reference_sources=["§ 9", "§ 13"])

    def retrieved(*sources):
        return Output(contexts=[Context(source=f"part2.md {s}. Heading") for s in sources])

    assert run("context_precision", retrieved("§ 9", "§ 13", "§ 8"), case).value == 1.0
    late = run("context_precision", retrieved("§ 8", "§ 10", "§ 9"), case)
    assert late.value == pytest.approx(1 / 3) and "ranks [3]" in late.explanation
    # "§ 1" is not "§ 11"
    one = Case(id="c", input="q", reference_sources=["§1"])
    assert run("context_recall", retrieved("§ 11", "§ 12"), one).value == 0
    assert run("context_recall", retrieved("§ 1"), one).passed
    partial = run("context_recall", retrieved("§ 9", "§ 10"), case)
    assert partial.value == 0.5 and "§ 13" in partial.explanation
    assert run("context_precision", Output(), case).value == 0


def test_custom_scorer_through_the_decorator():
    @scorer("cites_section_test", threshold=1.0)
    def cites_section(case, output, ctx):
        return Score(value=float("§" in output.text), passed="§" in output.text)

    assert "cites_section_test" in registered_scorers()
    assert run("cites_section_test", "Within 9 days (§ 9).").passed
    assert not run("cites_section_test", "Within 9 days.").passed
    with pytest.raises(ConfigError, match="unknown scorer"):
        resolve_scorer("no_such_scorer")
