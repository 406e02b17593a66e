"""The LLM judge: robust verdict parsing, the prompt it sends, and one real call."""

import asyncio

import pytest

from agentcycle.errors import ConfigError, ServiceError
from agentcycle.evals.scorers import openai_judge, parse_verdict, router_judge
from agentcycle.evals.scoring import ScoreContext, resolve_scorer
from agentcycle.evals.types import Case, Context, Output

CASE = Case(id="j", input="When must the deposit be returned?",
            reference="Within 21 days after the tenancy ends (§ 11).")


@pytest.mark.parametrize(("reply", "value"), [
    ('{"score": 4, "reason": "mostly right"}', 0.8),
    ('Sure! Here is my grading:\n```json\n{"Score": "5", "reason": "ok"}\n```\nThanks', 1.0),
    ('{"verdict": "FAIL", "reason": "wrong figure"}', 0.0),
    ('{"passed": true}', 1.0),
    ('{"score": 0.35}', 0.35),
    ("Score: 4/5", 0.8),
    ("**Rating**: 3 out of 5 - partially correct", 0.6),
    ("I'd give it 8/10.", 0.8),
    ("Score = 2", 0.4),
    ("Grade: 90%", 0.9),
    ("PASS", 1.0),
    ("  fail  ", 0.0),
    ("Verdict: FAIL. The answer says 12 days, not 21.", 0.0),
    ("The answer is incorrect.", 0.0),
    ("Correct - it matches the reference.", 1.0),
    ("Yes.", 1.0),
    ("No, the answer contradicts the reference.", 0.0),
    ("There is no error here; the answer is correct.", 1.0),
    ("5", 1.0),
    ("0.8", 0.8),
    ("I think about a 2", 0.4),
    ("4 - good", 0.8),
    ("The answer does not meet the rubric.", 0.0),
    ("The answer is not a valid answer to the question.", 0.0),
    ('{"score": 7}', 1.0),  # clipped to the scale
])
def test_parse_verdict_on_messy_replies(reply, value):
    parsed, reason = parse_verdict(reply)
    assert parsed == pytest.approx(value), reason


@pytest.mark.parametrize("reply", ["", "   ", "I cannot grade this.", "{not json", "?!"])
def test_parse_verdict_gives_none_when_there_is_no_verdict(reply):
    parsed, reason = parse_verdict(reply)
    assert parsed is None and reason


def test_parse_verdict_on_a_ten_point_scale():
    assert parse_verdict('{"score": 7}', scale=10)[0] == pytest.approx(0.7)


def judged(reply, *, small=False, raises=None, **options):
    sent = {}

    async def judge(messages, model):
        sent.update(messages=messages, model=model)
        if raises:
            raise raises
        return reply

    ctx = ScoreContext(judge=judge, judge_model="judge-m", judge_is_small_local=small)
    output = Output(text="Within 21 days.", contexts=[Context(source="§ 11", text="21 days")])
    score = asyncio.run(resolve_scorer({"name": "llm_judge", **options}).score(CASE, output, ctx))
    return score, sent


def test_llm_judge_prompt_holds_rubric_question_reference_answer():
    score, sent = judged('{"score": 5, "reason": "matches"}', rubric="Cites the section.",
                         with_context=True, model="other")
    prompt = sent["messages"][-1]["content"]
    for part in ("Cites the section.", CASE.question, CASE.reference, "Within 21 days.",
                 "Context:\n21 days"):
        assert part in prompt
    assert sent["model"] == "other"
    assert score.passed and score.value == 1.0 and score.explanation == "matches"


def test_llm_judge_never_crashes_on_garbage_and_says_when_it_is_small():
    score, sent = judged("Hmm. Interesting question!", small=True)
    assert sent["model"] == "judge-m"
    assert score.value == 0 and not score.passed
    assert "unparseable" in score.explanation and "small local model" in score.explanation
    assert judged("Score: 2/5", threshold=0.3)[0].passed


def test_llm_judge_errors_are_one_clear_line():
    with pytest.raises(ServiceError, match="judge.*failed: RuntimeError: boom"):
        judged("", raises=RuntimeError("boom"))
    with pytest.raises(ConfigError, match="needs a model"):
        asyncio.run(resolve_scorer("llm_judge").score(CASE, Output(text="x"), ScoreContext()))


@pytest.mark.slow
def test_judge_with_the_real_bundled_model(base_server):
    """The small local model as judge: a verdict comes back and parses (or scores 0 with
    the reason), whatever its quality; through an endpoint and through the router."""
    from agentcycle.router import Router
    from agentcycle.router.backends import local_backend

    output = Output(text="The deposit must be returned within 21 days after the tenancy ends.")
    for judge in (openai_judge(base_server.base_url, "base", "test-key", max_tokens=48),
                  router_judge(Router([local_backend("local", base_server.base_url, "base",
                                                     "test-key")]), max_tokens=48)):
        ctx = ScoreContext(judge=judge, judge_is_small_local=True)
        score = asyncio.run(resolve_scorer("llm_judge").score(CASE, output, ctx))
        assert 0.0 <= score.value <= 1.0
        assert "small local model" in score.explanation
    with pytest.raises(ConfigError, match="not one of the router's backends"):
        asyncio.run(resolve_scorer({"name": "llm_judge", "model": "gpt-x"}).score(
            CASE, output, ctx))


@pytest.mark.parametrize("reply", [
    "The answer to the question is: The landlord must serve notice on Form T-9.",
    "The deposit must be returned to the tenant within 21 days of the tenancy ending, "
    "unless the landlord has lodged a claim against it with the Registry.",
    '{"score": N, "reason": "..."}',
    "1.75 months' rent is the cap.",
])
def test_parse_verdict_does_not_read_figures_of_a_restated_answer_as_a_score(reply):
    assert parse_verdict(reply)[0] is None
