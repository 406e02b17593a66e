"""pytest plugin: agent tests beside unit tests (registered through the pytest11 entry point).

Kept import-light: pytest loads it in every session of every project that installs us,
so the scorers, models and HTTP clients are imported only when a test uses them.

    from agentcycle.evals import assert_score

    def test_deposit_deadline(agent_eval):
        answer = my_agent("When must the deposit be returned?")
        agent_eval.assert_score(answer, "keywords", case={"keywords": ["21 days"]})
        assert_score(answer, "regex", pattern=r"§\\s*\\d+")   # works without the fixture

The ``agent_eval`` fixture shares one scoring context per session (the MiniLM embedder
is built once) and, given ``--agentcycle-judge-url`` and ``--agentcycle-judge-model``,
an LLM judge for ``llm_judge`` and ``faithfulness(mode="judge")``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from agentcycle.evals.scoring import ScoreContext
    from agentcycle.evals.types import Case, Output, Score


def _as_output(output: Any) -> Output:
    from agentcycle.evals.targets import TargetError, to_output

    try:
        return to_output(output)
    except (TargetError, ValueError) as exc:
        raise TypeError(f"assert_score needs a string, an Output, a dict or an AgentResult, "
                        f"not {type(output)!r}: {exc}") from None


def _as_case(case: Any) -> Case:
    from agentcycle.evals.types import Case

    if case is None:
        return Case(id="assert_score", input="")
    if isinstance(case, Case):
        return case
    if isinstance(case, dict):
        return Case(**{"id": "assert_score", "input": "", **case})
    raise TypeError(f"assert_score's case must be a Case or a dict, not {type(case)!r}")


def _run(coro: Any) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        running = False
    else:
        running = True
    if not running:  # outside the except block: a scorer's error is not chained to it
        return asyncio.run(coro)
    # Called from inside a running loop (an async test): score on a private loop.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def score(output: Any, scorer: str = "contains", *, case: Any = None,
          threshold: float | None = None, ctx: ScoreContext | None = None,
          **options: Any) -> Score:
    """Run one registered scorer on ``output`` (a string, an ``Output`` or a dict) and
    return its Score, ``passed`` against ``threshold`` (default: the scorer's)."""
    from agentcycle.evals.scorers import resolve_scorer  # (registers the built-ins)
    from agentcycle.evals.scoring import ScoreContext

    spec: dict[str, Any] = {"name": scorer, **options}
    if threshold is not None:
        spec["threshold"] = threshold
    bound = resolve_scorer(spec)
    return _run(bound.score(_as_case(case), _as_output(output), ctx or ScoreContext()))


def assert_score(output: Any, scorer: str = "contains", *, case: Any = None,
                 threshold: float | None = None, ctx: ScoreContext | None = None,
                 **options: Any) -> Score:
    """Fail the test unless ``scorer`` passes ``output``; the message names the scorer,
    its value, the threshold and the scorer's explanation. Returns the Score.

    ``case`` (a ``Case`` or a dict of its fields: reference, keywords, expected_tools,
    reference_sources ...) holds what the scorer compares against; ``options`` go to the
    scorer (``pattern=`` for regex, ``schema=`` for json_schema, ``rubric=`` ...).
    """
    __tracebackhide__ = True
    result = score(output, scorer, case=case, threshold=threshold, ctx=ctx, **options)
    if not result.passed:
        from agentcycle.evals.scorers import resolve_scorer

        limit = threshold if threshold is not None else resolve_scorer(scorer).threshold
        text = _as_output(output).text
        raise AssertionError(
            f"scorer '{scorer}' scored {result.value:.3f} < threshold {limit:.3f}: "
            f"{result.explanation or 'no explanation'}\n  output: {text[:200]!r}")
    return result


class AgentEval:
    """What the ``agent_eval`` fixture gives a test: ``score`` and ``assert_score``
    bound to the session's scoring context."""

    def __init__(self, ctx: ScoreContext):
        self.ctx = ctx

    def score(self, output: Any, scorer: str = "contains", **kwargs: Any) -> Score:
        return score(output, scorer, ctx=self.ctx, **kwargs)

    def assert_score(self, output: Any, scorer: str = "contains", **kwargs: Any) -> Score:
        __tracebackhide__ = True
        return assert_score(output, scorer, ctx=self.ctx, **kwargs)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("agentcycle", "agentcycle agent evals")
    group.addoption("--agentcycle-judge-url", default=None,
                    help="OpenAI-compatible base URL of the LLM judge (for llm_judge)")
    group.addoption("--agentcycle-judge-model", default=None, help="the judge's model name")
    group.addoption("--agentcycle-judge-key", default=None, help="the judge's API key")


@pytest.fixture(scope="session")
def agent_eval_context(request: pytest.FixtureRequest) -> ScoreContext:
    """One scoring context per session: the embedder is built on first use; the judge
    comes from the --agentcycle-judge-* options, when given."""
    from agentcycle.evals.scoring import ScoreContext

    ctx = ScoreContext()
    url = request.config.getoption("--agentcycle-judge-url")
    model = request.config.getoption("--agentcycle-judge-model")
    if url and model:
        from agentcycle.evals.scorers.judge import openai_judge

        ctx.judge = openai_judge(url, model, request.config.getoption("--agentcycle-judge-key"))
        ctx.judge_model = model
    return ctx


@pytest.fixture
def agent_eval(agent_eval_context: ScoreContext) -> AgentEval:
    """Score agent outputs in a test: ``agent_eval.assert_score(output, "contains", ...)``."""
    return AgentEval(agent_eval_context)
