"""The runner: concurrency, retries, errored cases, the output cache, the journal and
resume after an interrupted run. Targets are real HTTP servers or Python functions."""

import asyncio
import json

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from agentcycle.errors import DataError
from agentcycle.evals import (
    CallableTarget,
    Case,
    OpenAITarget,
    OutputCache,
    Score,
    Suite,
    load_run,
    run_suite,
    scorer,
)
from agentcycle.evals.results import Journal, runs_dir
from agentcycle.evals.runner import run_suite_sync
from helpers import BackgroundServer, chat_app


def echo_chat_app(fail_on: str | None = None) -> FastAPI:
    """OpenAI chat completions answering with the last user message, HTTP 500 when it
    contains ``fail_on``; ``app.state.requests`` counts the calls."""

    def respond(body: dict):
        question = body["messages"][-1]["content"]
        if fail_on and fail_on in question:
            return JSONResponse({"error": {"message": "engine crashed"}}, status_code=500)
        return {"content": f"echo: {question}"}

    return chat_app(respond, usage=(10, 5))


@scorer("mentions_even", threshold=1.0)
def mentions_even(case, output, ctx):
    """A custom scorer registered like a user's: the answer names an even number."""
    ok = any(ch.isdigit() and int(ch) % 2 == 0 for ch in output.text)
    return Score(value=float(ok), passed=ok)


def cases(n, boom=()):
    return [Case(id=f"c{i}", input=("boom " if i in boom else "") + f"question {i}",
                 keywords=[f"question {i}"], tags=["even" if i % 2 == 0 else "odd"])
            for i in range(n)]


def test_errored_case_is_marked_and_the_run_goes_on_then_cache_skips_the_model():
    app = echo_chat_app(fail_on="boom")
    suite = Suite(name="echo", cases=cases(6, boom={3}), scorers=["keywords"])
    with BackgroundServer(app) as server:
        target = OpenAITarget(server.url + "/v1", "echo-model", "k", max_tokens=8)
        cache = OutputCache.default()
        run = run_suite_sync(suite, target, concurrency=3, retries=2, cache=cache,
                             backoff_s=0.01)
        assert len(app.state.requests) == 5 + 3, "5 good cases, the bad one tried 3 times"
        by_id = {r.id: r for r in run.results}
        assert "HTTP 500" in by_id["c3"].error and by_id["c3"].attempts == 3
        assert not by_id["c3"].passed and by_id["c3"].scores == {}
        assert all(by_id[f"c{i}"].passed for i in (0, 1, 2, 4, 5))
        assert run.finished and run.metrics["errors"] == 1
        assert run.metrics["accuracy"] == pytest.approx(5 / 6)
        assert run.metrics["keywords.mean"] == 1.0  # errored cases are failed, not scored
        assert run.metrics["prompt_tokens"] == 50 and run.metrics["p95_latency_ms"] > 0
        assert run.tags["even"]["cases"] == 3
        assert run.tags["odd"]["accuracy"] == pytest.approx(2 / 3)

        # Re-score with another scorer: every good output comes from the cache.
        before = len(app.state.requests)
        rescored = suite.model_copy(update={"scorers": ["keywords", "mentions_even"]})
        again = run_suite_sync(rescored, target, concurrency=3, retries=0, cache=cache)
        assert len(app.state.requests) - before == 1, "only the errored case is asked again"
        assert sum(r.cached for r in again.results) == 5
        assert {r.id for r in again.results if r.scores.get("mentions_even", Score(
            value=0, passed=False)).passed} == {"c0", "c2", "c4"}

        # A different target key (another model) is never served from the cache.
        other = OpenAITarget(server.url + "/v1", "other-model", "k", max_tokens=8)
        run_suite_sync(Suite(name="echo", cases=cases(2), scorers=["keywords"]), other,
                       cache=cache)
        assert len(app.state.requests) - before == 3


def test_a_run_counts_the_cases_cut_at_max_tokens():
    def respond(body: dict):  # an engine that stops at max_tokens on "long" questions
        question = body["messages"][-1]["content"]
        return {"content": question, "finish_reason": "length" if "long" in question else None}

    suite = Suite(name="cut", scorers=["keywords"], cases=[
        Case(id=str(i), input=text, keywords=["x"])
        for i, text in enumerate(["x short", "x long", "x long too", "x"])])
    with BackgroundServer(chat_app(respond)) as server:
        run = run_suite_sync(suite, OpenAITarget(server.url + "/v1", "m", max_tokens=4))
    assert {r.id for r in run.results if r.output.truncated} == {"1", "2"}
    assert run.metrics["truncated"] == 2 and run.metrics["accuracy"] == 1.0


def test_concurrency_limit_is_respected():
    active, peak = 0, 0

    async def agent(question):
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.02)
        active -= 1
        return f"answer to {question}"

    suite = Suite(name="c", cases=cases(12), scorers=["keywords"])
    run = asyncio.run(run_suite(suite, CallableTarget(agent), concurrency=4))
    assert peak == 4 and len(run.results) == 12 and run.metrics["accuracy"] == 1.0


def test_interrupted_run_loses_no_finished_case_and_resumes():
    calls = []

    def agent(question):
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the run
        calls.append(question)
        return f"answer to {question}"

    suite = Suite(name="resume", cases=cases(8), scorers=["keywords"])
    target = CallableTarget(agent, key="agent-v1")
    progress = []
    with pytest.raises(KeyboardInterrupt):
        run_suite_sync(suite, target, concurrency=1, progress=lambda d, t: progress.append(d))
    [folder] = runs_dir().iterdir()
    header, finished = Journal.read(folder / "journal.jsonl")
    assert header["suite"] == "resume" and [r.id for r in finished] == ["c0", "c1", "c2"]
    partial = load_run(folder.name)
    assert not partial.finished and len(partial.results) == 3

    calls.clear()
    resumed_calls = []

    def agent_again(question):
        resumed_calls.append(question)
        return f"answer to {question}"

    run = run_suite_sync(suite, CallableTarget(agent_again, key="agent-v1"), concurrency=2,
                         resume=folder.name)
    assert sorted(resumed_calls) == [f"question {i}" for i in range(3, 8)], "no case re-run"
    assert run.finished and [r.id for r in run.results] == [f"c{i}" for i in range(8)]
    assert run.metrics["accuracy"] == 1.0
    assert load_run(folder.name).finished

    with pytest.raises(Exception, match="resume it with the same target"):
        run_suite_sync(suite, CallableTarget(agent_again, key="agent-v2"), resume=folder.name)


def test_journal_skips_a_torn_last_line(tmp_path):
    journal = tmp_path / "journal.jsonl"
    journal.write_text(json.dumps({"type": "header", "suite": "s"}) + "\n"
                       + json.dumps({"type": "case", "result": {"id": "a", "input": "q"}})
                       + "\n" + '{"type": "case", "resu')
    header, results = Journal.read(journal)
    assert header["suite"] == "s" and [r.id for r in results] == ["a"]
    resumed = Journal(journal)  # the torn line is cut: the next case is a line of its own
    resumed.write({"type": "case", "result": {"id": "b", "input": "q"}})
    resumed.close()
    assert [r.id for r in Journal.read(journal)[1]] == ["a", "b"]


@pytest.mark.parametrize("damage, reason", [
    ("[1, 2]", "journal.jsonl:2: damaged journal line .a JSON list"),
    ('{"type": "case", "result": {"id": 5}}', "journal.jsonl:2: damaged journal line"),
    ("not json at all", "journal.jsonl:2: damaged journal line"),
])
def test_a_journal_damaged_before_its_last_line_is_one_error_naming_the_line(
        tmp_path, damage, reason):
    """Only a torn last line is a kill mid-write; damage elsewhere was skipped silently
    (or raised pydantic's 70-line error), and the resumed run lost those cases."""
    journal = tmp_path / "journal.jsonl"
    case = json.dumps({"type": "case", "result": {"id": "a", "input": "q"}})
    journal.write_text(json.dumps({"type": "header", "suite": "s"}) + "\n" + damage + "\n"
                       + case + "\n")
    with pytest.raises(DataError, match=reason):
        Journal.read(journal)


def test_a_journal_without_its_header_or_in_bad_utf8_is_refused(tmp_path):
    journal = tmp_path / "journal.jsonl"
    journal.write_text(json.dumps({"type": "case", "result": {"id": "a", "input": "q"}}) + "\n")
    with pytest.raises(DataError, match="no header line"):  # the target check needs it
        Journal.read(journal)
    journal.write_bytes(b'{"type": "header"}\n\xff\xfe\n')
    with pytest.raises(DataError, match="unreadable journal"):
        Journal.read(journal)


def test_run_files_are_readable_like_any_new_file(tmp_path):
    """atomic_write's temp file was owner-only (0600): report.html could not be served."""
    import os

    from agentcycle._files import atomic_write

    umask = os.umask(0o022)
    try:
        atomic_write(tmp_path / "report.html", "<html></html>")
    finally:
        os.umask(umask)
    assert (tmp_path / "report.html").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_assert_score_errors_are_not_chained_to_a_loop_probe():
    """pytest showed a scorer's error 'during handling of RuntimeError: no running event
    loop', a red herring above the real message."""
    import pytest

    from agentcycle.errors import ConfigError
    from agentcycle.evals import assert_score

    with pytest.raises(ConfigError) as error:
        assert_score("x", "keywords", case={"input": "q"})
    assert error.value.__context__ is None and "needs key facts" in str(error.value)


def test_run_ids_sort_by_start_time_within_one_second():
    import time

    from agentcycle.evals.results import new_run_id

    ids = []
    for _ in range(5):
        ids.append(new_run_id())
        time.sleep(0.002)
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert len(ids[0]) == len("20261201-210549-3894c0")
