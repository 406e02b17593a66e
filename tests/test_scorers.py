from agentcycle.evals import EvalSummary, QACase, evaluate, exact_match, keyword_match
from agentcycle.rag.agent import Answer


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


def _answer(text, latency=100.0):
    return Answer(answer=text, sources=[], model="m", backend="b", latency_ms=latency,
                  prompt_tokens=90, completion_tokens=10, cost_usd=0.001)


def test_evaluate_scores_and_keeps_going_after_an_error(embedder):
    cases = [QACase(id="1", question="q1", answer="It is 21 days.", keywords=["21 days"]),
             QACase(id="2", question="q2", answer="It is 5%.", keywords=["5%"]),
             QACase(id="3", question="boom", answer="x", keywords=["x"])]

    def agent(question):
        if question == "boom":
            raise RuntimeError("backend down")
        return _answer("It is 21 days." if question == "q1" else "No idea.")

    summary: EvalSummary = evaluate(agent, cases, embedder, concurrency=2)
    assert summary.cases == 3 and summary.errors == 1
    assert abs(summary.accuracy - 1 / 3) < 1e-9
    by_id = {r.id: r for r in summary.results}
    assert by_id["1"].passed and by_id["1"].similarity > 0.99
    assert not by_id["2"].passed and by_id["2"].similarity < 0.9
    assert "backend down" in by_id["3"].error
    assert summary.p50_latency_ms == 100.0
    assert abs(summary.cost_per_1k_tokens - 1000 * 0.002 / 200) < 1e-12
    assert abs(summary.tokens_per_s - 100.0) < 1e-9
    low, high = summary.accuracy_ci95
    assert 0.0 < low < 1 / 3 < high < 1.0


def test_wilson_interval_and_paired_flips():
    from agentcycle.evals.runner import paired_flips, summarize, wilson_interval

    low, high = wilson_interval(10, 32)
    assert (round(low, 3), round(high, 3)) == (0.18, 0.486)  # by hand: Wilson, z = 1.96
    assert wilson_interval(0, 0) == (0.0, 0.0)

    def results(passes):
        from agentcycle.evals.runner import CaseResult

        return [CaseResult(str(i), "q", "r", "a", p, False, 0.0, 1.0, 1, 1, 0.0, "b")
                for i, p in enumerate(passes)]

    before = summarize(results([True, False, False, True]), "base", 1.0)
    after = summarize(results([True, True, True, False]), "tuned", 1.0)
    assert paired_flips(before, after) == (2, 1)
