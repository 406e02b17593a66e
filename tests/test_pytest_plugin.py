"""The pytest plugin as users meet it: installed through the entry point, in their own
test files (run here with pytester)."""

import pytest

pytest_plugins = ["pytester"]


def test_assert_score_and_the_agent_eval_fixture(pytester):
    pytester.makepyfile(test_agent='''
        from agentcycle.evals import Output, ToolCall, assert_score

        def test_keywords_pass(agent_eval):
            score = agent_eval.assert_score("Within 21 days (§ 11).", "keywords",
                                            case={"keywords": ["21 days"]})
            assert score.value == 1.0

        def test_regex_without_the_fixture():
            assert_score("Within 9 days (§ 9).", "regex", pattern=r"§\\s*\\d+")

        def test_tools():
            out = Output(text="", tool_calls=[ToolCall(name="get_section",
                                                        arguments={"number": "9"})])
            assert_score(out, "tool_args",
                         case={"expected_tools": [{"name": "get_section",
                                                   "arguments": {"number": 9}}]})

        def test_wrong_figure_fails():
            assert_score("Within 12 days.", "keywords", case={"keywords": ["21 days"]})

        def test_threshold_is_ours_to_set(agent_eval):
            agent_eval.assert_score("Form T-4 only", "contains",
                                    value=["Form T-4", "copy"], threshold=0.5)
            agent_eval.assert_score("Form T-4 only", "contains",
                                    value=["Form T-4", "copy"], threshold=0.9)
    ''')
    result = pytester.runpytest("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, failed=2)
    result.stdout.fnmatch_lines([
        "*scorer 'keywords' scored 0.000 < threshold 1.000: missing*21 days*",
        "*scorer 'contains' scored 0.500 < threshold 0.900: missing*copy*",
    ])


def test_async_tests_and_bad_use(pytester):
    pytester.makepyfile(test_async='''
        import asyncio
        import pytest
        from agentcycle.errors import ConfigError
        from agentcycle.evals import assert_score

        def test_inside_a_running_loop():
            async def main():
                return assert_score("Yes", "regex", pattern="yes", flags="i", full=True)
            assert asyncio.run(main()).passed

        def test_unknown_scorer_is_a_config_error():
            with pytest.raises(ConfigError, match="unknown scorer 'nope'"):
                assert_score("x", "nope")
    ''')
    pytester.runpytest("-q", "-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_judge_options_are_registered(pytester):
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*--agentcycle-judge-url*", "*--agentcycle-judge-model*"])
    pytester.makepyfile(test_ctx='''
        def test_ctx(agent_eval):
            assert agent_eval.ctx.judge is not None
            assert agent_eval.ctx.judge_model == "m"
    ''')
    pytester.runpytest("-q", "-p", "no:cacheprovider", "--agentcycle-judge-url",
                       "http://127.0.0.1:9/v1", "--agentcycle-judge-model", "m"
                       ).assert_outcomes(passed=1)


@pytest.mark.parametrize("bad", [42, ["list"]])
def test_assert_score_rejects_what_it_cannot_score(bad):
    from agentcycle.evals import assert_score

    with pytest.raises(TypeError, match="assert_score needs"):
        assert_score(bad, "contains", value="x")


def test_assert_score_reads_the_rag_agents_answer():
    from agentcycle.evals import assert_score
    from agentcycle.rag.agent import Answer, Source

    answer = Answer(answer="Send Form T-4 to the Registry.", model="m", backend="b",
                    latency_ms=120.0, prompt_tokens=90, completion_tokens=10, cost_usd=0.0,
                    sources=[Source(source="part2_deposits.md", heading="§ 11. Return",
                                    score=0.9, text="send Form T-4 to the Registry")])
    assert_score(answer, "context_recall", case={"reference_sources": ["§ 11"]})
    assert_score(answer, "latency_budget", max_ms=200)
    assert_score(answer, "faithfulness", embeddings=False)


def test_an_agent_result_is_scored_with_its_tool_calls(agent_eval):
    from agentcycle.agents import AgentResult, ToolCallRecord

    result = AgentResult(answer="The deposit is capped at 1800 crowns (§ 8).", kind="tools",
                         tool_calls=[ToolCallRecord(name="max_deposit",
                                                    arguments={"monthly_rent": 1200})])
    case = {"expected_tools": [{"name": "max_deposit", "arguments": {"monthly_rent": 1200}}]}
    agent_eval.assert_score(result, "exact_args", case=case)
    agent_eval.assert_score(result, "valid_tool_calls", case=case)
    wrong = result.model_copy(update={"tool_calls": [ToolCallRecord(
        name="max_deposit", arguments={"monthly_rent": 1000})]})
    assert not agent_eval.score(wrong, "exact_args", case=case).passed
