"""The workflow agent: bounded review loop, approve/edit/reject, a side effect done once,
a run killed between two nodes and resumed in another process, typed errors that keep the
thread. A scripted model speaks the OpenAI protocol on 127.0.0.1; the store is real SQLite
here (the tests marked `store` run again on a real PostgreSQL in test_workflow_postgres.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fastapi import FastAPI

from agentcycle.agents import AgentResult
from agentcycle.agents.workflow import (
    InvalidDecision,
    Ledger,
    RuleReviewer,
    ThreadFinished,
    ThreadNotFound,
    WorkflowAgent,
    build_workflow_agent,
)
from agentcycle.errors import ConfigError, ServiceError
from agentcycle.serving.server import free_port
from agentcycle.settings import Settings
from helpers import BackgroundServer, assert_clean_error, chat_app, cli_run

DRAFT = "Deposits are returned after the tenancy ends."
REVISED = "Deposits are returned within 21 days after the tenancy ends [1]."
_STORE_VARS = ("DATABASE_URL", "POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_USER",
               "POSTGRES_PASSWORD", "POSTGRES_DB")


def scripted_app() -> FastAPI:
    """OpenAI chat completions whose answer depends only on the prompt: a first draft, or
    the revision once a reviewer's notes are in it, so every process gets the same text."""

    def respond(body: dict) -> dict:
        prompt = body["messages"][-1]["content"]
        return {"content": REVISED if "A reviewer found these problems" in prompt else DRAFT}

    return chat_app(respond)


@pytest.fixture(scope="session")
def model_url():
    with BackgroundServer(scripted_app()) as server:
        yield server.url + "/v1"


def make_router(url: str):
    from agentcycle.router import Router
    from agentcycle.router.backends import local_backend

    return Router([local_backend("scripted", url, "scripted", "k")], tracing=False,
                  log_path=False)


@pytest.fixture(scope="session")
def router(model_url):
    router = make_router(model_url)
    yield router
    router.close()


@pytest.fixture
def store_uri():
    """None: the embedded SQLite store; the PostgreSQL module overrides this."""
    return None


@pytest.fixture
def wf_settings(store_uri, monkeypatch) -> Settings:
    for name in _STORE_VARS:
        monkeypatch.delenv(name, raising=False)
    if store_uri:
        monkeypatch.setenv("DATABASE_URL", store_uri)  # subprocesses see it too
    return Settings()


@pytest.fixture
def agent_factory(wf_settings, router):
    opened = []

    def make(**options):
        options.setdefault("tracing", False)
        options.setdefault("required_terms", ("21 days",))
        agent = build_workflow_agent(wf_settings, router, **options)
        opened.append(agent)
        return agent

    yield make
    for agent in opened:
        agent.close()


def names(result: AgentResult) -> list[str]:
    return [step.name for step in result.steps]


# -- the shared tests (SQLite here, PostgreSQL in test_workflow_postgres.py) ---------------

def test_review_loop_is_bounded(agent_factory):
    agent = agent_factory(required_terms=("unicorn",), max_iterations=2)
    result = agent.run("When is the deposit returned?")
    assert result.status == "interrupted" and result.kind == "workflow"
    assert result.metadata["iterations"] == 2
    assert result.metadata["notes"] == ["must mention: unicorn"]
    assert names(result) == ["research", "draft", "review", "revise", "review", "revise",
                             "review"]
    # Usage is the sum of the three model calls (draft + two revisions).
    assert (result.prompt_tokens, result.completion_tokens) == (300, 60)
    assert result.model == "scripted"
    assert all(s.latency_ms > 0 for s in result.steps if s.kind == "llm")
    zero = agent_factory(required_terms=("unicorn",), max_iterations=0)
    assert zero.run("When is the deposit returned?").metadata["iterations"] == 0


def test_approve_after_one_revision(agent_factory):
    agent = agent_factory()
    pending = agent.run("When is the deposit returned?", thread_id="t-approve")
    assert pending.status == "interrupted"
    assert pending.metadata == {"thread_id": "t-approve", "iterations": 1, "draft": REVISED,
                                "notes": [], "next": ["approval"]}
    done = agent.approve("t-approve")
    assert done.status == "completed" and done.answer == REVISED
    assert names(done)[-2:] == ["approval", "finalize"]
    assert done.prompt_tokens == 200  # the approval made no model call
    info = agent.show("t-approve")
    assert info.outbox["answer"] == REVISED and info.outbox["decision"]["action"] == "approve"
    assert [(t.thread_id, t.status) for t in agent.threads()] == [("t-approve", "completed")]


def test_edit_replaces_the_draft(agent_factory):
    agent = agent_factory()
    thread = agent.run("When is the deposit returned?").metadata["thread_id"]
    done = agent.resume(thread, {"action": "edit", "text": "Within 21 days (§ 7)."})
    assert done.status == "completed" and done.answer == "Within 21 days (§ 7)."
    assert agent.show(thread).outbox["answer"] == "Within 21 days (§ 7)."


def test_reject_keeps_the_outbox_empty(agent_factory):
    agent = agent_factory()
    thread = agent.run("When is the deposit returned?").metadata["thread_id"]
    done = agent.reject(thread, "cites the wrong section")
    assert done.status == "rejected" and done.metadata["reason"] == "cites the wrong section"
    assert names(done)[-1] == "approval"
    info = agent.show(thread)
    assert info.status == "rejected" and info.outbox is None


def test_bad_input_keeps_the_thread(agent_factory):
    agent = agent_factory()
    with pytest.raises(ThreadNotFound, match="no workflow thread 'nope'"):
        agent.resume("nope", "approve")
    thread = agent.run("When is the deposit returned?").metadata["thread_id"]
    bad = [None, "maybe", {"action": "edit"}, {"action": "edit", "text": "  "},
           {"action": "reject"}, 42]
    for decision in bad:
        with pytest.raises(InvalidDecision):
            agent.resume(thread, decision)
    with pytest.raises(InvalidDecision, match="reason"):
        agent.reject(thread, "")
    with pytest.raises(ConfigError, match="already exists"):
        agent.run("another task", thread_id=thread)
    with pytest.raises(ConfigError, match="empty"):
        agent.run("  ")
    info = agent.show(thread)  # nothing lost: still waiting, same draft
    assert (info.status, info.draft, info.next) == ("interrupted", REVISED, ["approval"])
    assert agent.approve(thread).status == "completed"
    for again in (lambda: agent.approve(thread), lambda: agent.resume(thread)):
        with pytest.raises(ThreadFinished, match="already completed"):
            again()


def test_side_effect_runs_once_per_thread(agent_factory, wf_settings):
    fetched = []

    def researcher(task):
        fetched.append(task)
        return [{"source": "act.md", "heading": "§ 7", "text": "within 21 days"}]

    agent = agent_factory(researcher=researcher)
    pending = agent.run("When is the deposit returned?", thread_id="t-fx")
    assert pending.sources[0].heading == "§ 7"
    # Another agent over the same store (a new process would be the same) finishes it.
    other = agent_factory(researcher=researcher)
    assert other.approve("t-fx").sources[0].source == "act.md"
    assert len(fetched) == 1 and agent.ledger.effects("t-fx") == ["research"]
    # The idempotency key (thread_id:node) holds across connections: a node re-run after a
    # crash that beat its checkpoint gets the recorded result, without a second fetch.
    calls = []
    first, second = Ledger(wf_settings), Ledger(wf_settings)
    try:
        assert first.once("t-key", "research", lambda: calls.append(1) or ["a"]) == ["a"]
        assert second.once("t-key", "research", lambda: calls.append(2) or ["b"]) == ["a"]
    finally:
        first.close(), second.close()
    assert calls == [1]


_CHILD = textwrap.dedent("""
    import os, signal, sys, time
    from types import SimpleNamespace

    import httpx

    from agentcycle.agents.workflow import build_workflow_agent
    from agentcycle.settings import Settings

    mode, thread, url, kill_at, ledger = sys.argv[1:6]

    class Model:
        # The Router's complete() over plain HTTP: the same OpenAI protocol without
        # LiteLLM's import (seconds per process on two shared cores).
        def complete(self, messages, **params):
            started = time.perf_counter()
            params.pop("route", None)
            body = httpx.post(url + "/chat/completions", timeout=30,
                              json={"model": "scripted", "messages": messages, **params}).json()
            usage = body["usage"]
            return SimpleNamespace(
                text=body["choices"][0]["message"]["content"], model=body["model"],
                backend="scripted", prompt_tokens=usage["prompt_tokens"],
                completion_tokens=usage["completion_tokens"], cost_usd=0.0, reason="primary",
                latency_ms=(time.perf_counter() - started) * 1000)

    def researcher(task):
        with open(ledger, "a") as f:  # every real fetch, across processes
            f.write(task + "\\n")
        return ["Deposits: within 21 days."]

    def hook(node, thread_id):
        if node == kill_at:  # the previous node's checkpoint is on disk: die now
            os.kill(os.getpid(), signal.SIGKILL)

    agent = build_workflow_agent(Settings(), Model(), required_terms=("21 days",),
                                 researcher=researcher, tracing=False, on_node=hook)
    result = (agent.run("When is the deposit returned?", thread_id=thread) if mode == "run"
              else agent.resume(thread))
    print(result.status)
""")


def _child(mode: str, thread: str, url: str, kill_at: str, ledger: Path):
    return subprocess.run([sys.executable, "-c", _CHILD, mode, thread, url, kill_at,
                           str(ledger)], capture_output=True, text=True, timeout=120,
                          env=os.environ.copy())


def _comparable(agent: WorkflowAgent, thread: str) -> dict:
    """The final state without what differs by nature (ids, times, latencies)."""
    state = dict(agent.graph.get_state({"configurable": {"thread_id": thread}}).values)
    state["steps"] = [s["name"] for s in state["steps"]]
    state["calls"] = [(c["prompt_tokens"], c["completion_tokens"]) for c in state["calls"]]
    outbox = agent.show(thread).outbox
    return {**state, "outbox": outbox and outbox["answer"]}


def test_killed_between_nodes_resumes_in_another_process(agent_factory, model_url, tmp_path):
    ledger = tmp_path / "fetches.txt"
    killed = _child("run", "t-crash", model_url, "review", ledger)  # after draft, before review
    assert killed.returncode == -9, killed.stderr
    agent = agent_factory()
    assert agent.show("t-crash").status == "incomplete"
    assert agent.show("t-crash").next == ["review"]
    resumed = _child("resume", "t-crash", model_url, "-", ledger)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip() == "interrupted"
    assert agent.approve("t-crash").status == "completed"
    # The same run without the crash, in this process.
    reference = agent_factory(researcher=lambda task: ["Deposits: within 21 days."])
    reference.run("When is the deposit returned?", thread_id="t-ref")
    reference.approve("t-ref")
    assert _comparable(agent, "t-crash") == _comparable(reference, "t-ref")
    assert ledger.read_text().count("\n") == 1  # research ran once, before the kill


# -- SQLite only ---------------------------------------------------------------------------

def test_every_node_is_a_span(agent_factory):
    import mlflow

    agent = agent_factory(tracing=True)
    pending = agent.run("When is the deposit returned?")
    done = agent.approve(pending.metadata["thread_id"])
    mlflow.flush_trace_async_logging()
    first = [s.name for s in mlflow.get_trace(pending.trace_id).data.spans]
    second = [s.name for s in mlflow.get_trace(done.trace_id).data.spans]
    assert first[0] == "workflow agent" and second[0] == "workflow agent"
    assert sorted(set(first[1:])) == ["workflow.approval", "workflow.draft",
                                      "workflow.research", "workflow.review",
                                      "workflow.revise"]
    assert second[1:] == ["workflow.approval", "workflow.finalize"]


def test_unreachable_postgres_is_one_clear_error(monkeypatch):
    dead = f"postgresql://u:secret@127.0.0.1:{free_port()}/db"
    with pytest.raises(ServiceError, match=r"cannot connect to PostgreSQL at 127\.0\.0\.1:\d+"
                       ) as caught:
        WorkflowAgent(Settings(database_url=dead))
    assert "secret" not in str(caught.value)
    monkeypatch.setenv("DATABASE_URL", dead)
    code, output = _cli("workflow", "list")
    _clean_error(code, output, "cannot connect to PostgreSQL")


def test_bad_options_are_config_errors(wf_settings, router):
    with pytest.raises(ConfigError, match="max_iterations"):
        build_workflow_agent(wf_settings, router, max_iterations=-1)
    with pytest.raises(ConfigError, match="unknown reviewer"):
        build_workflow_agent(wf_settings, router, reviewer="vibes")
    with pytest.raises(ConfigError, match="citation pattern"):
        RuleReviewer(citation_pattern="[")
    with pytest.raises(ConfigError, match="unsupported workflow store"):
        WorkflowAgent(Settings(database_url="mysql://x/y"))


def test_rule_reviewer_checks():
    review = RuleReviewer(min_chars=10, required_terms=("21 days",), require_citation=True)
    assert review("t", "short", []).notes == [
        "too short: 5 characters, at least 10 needed", "must mention: 21 days",
        "cite a source"]
    assert review("t", "Within 21 days [1].", [{"text": "x"}]).ok
    assert review("t", "Within 21 days (§ 7).", []).ok


def test_llm_reviewer_counts_its_calls(agent_factory):
    # The scripted model never says OK: its reply is the review's note, each call counted.
    agent = agent_factory(reviewer="llm", max_iterations=1)
    result = agent.run("When is the deposit returned?")
    assert result.metadata["notes"] == [DRAFT]
    assert result.prompt_tokens == 4 * 100  # draft, review, revise, review


_cli, _clean_error = cli_run, assert_clean_error


def test_cli_list_show_approve_reject(agent_factory):
    agent = agent_factory()
    first = agent.run("When is the deposit returned?", thread_id="c-1")
    agent.run("Can rent rise mid-lease?", thread_id="c-2")
    assert first.status == "interrupted"
    code, output = _cli("workflow", "list", "--json")
    assert code == 0, output
    assert [(t["thread_id"], t["status"]) for t in json.loads(output)] == [
        ("c-1", "interrupted"), ("c-2", "interrupted")]
    code, output = _cli("workflow", "show", "c-1")
    assert code == 0 and "interrupted" in output and REVISED in output
    code, output = _cli("workflow", "approve", "c-1", "--text", "Within 21 days.", "--json")
    assert code == 0, output
    assert json.loads(output)["answer"] == "Within 21 days."
    code, output = _cli("workflow", "reject", "c-2", "--reason", "off topic")
    assert code == 0 and "rejected" in output and "off topic" in output
    code, output = _cli("workflow", "show", "c-1", "--json")
    assert json.loads(output)["outbox"]["answer"] == "Within 21 days."
    _clean_error(*_cli("workflow", "show", "nope"), "no workflow thread 'nope'")
    _clean_error(*_cli("workflow", "approve", "c-1"), "already completed")
    _clean_error(*_cli("workflow", "resume", "c-2"), "already rejected")
    _clean_error(*_cli("workflow", "reject", "nope", "--reason", "x"), "no workflow thread")


def test_cli_resume_waiting_thread_asks_for_a_decision(agent_factory):
    agent_factory().run("When is the deposit returned?", thread_id="c-3")
    _clean_error(*_cli("workflow", "resume", "c-3"), "waits for approval")
    _clean_error(*_cli("workflow", "reject", "c-3", "--reason", " "), "needs a reason")
    code, output = _cli("workflow", "list")
    assert code == 0 and "c-3" in output and "interrupted" in output


def test_cli_prints_model_text_verbatim_and_whole_thread_ids(agent_factory):
    """Brackets in a task or an answer are text, not Rich markup ("[/b]" raised, "[name]"
    vanished), and `list` shows an id that `approve` can take, however long."""
    thread = "thread-with-a-long-id-0123456789abcdef"
    agent_factory().run("Reply to [user's name] about [/b] deposits", thread_id=thread)
    code, output = _cli("workflow", "list")
    assert code == 0 and thread in output, output
    code, output = _cli("workflow", "show", thread)
    assert code == 0 and "Reply to [user's name] about [/b] deposits" in output, output
    code, output = _cli("workflow", "approve", thread, "--text", "Dear [user's name], [/b]")
    assert code == 0 and "Dear [user's name], [/b]" in output, output


def test_the_app_resume_endpoint_takes_the_documented_body(agent_factory):
    """POST /v1/workflows/{id}/resume with {"decision": ..., "text": ..., "reason": ...}
    on the real workflow agent (the app's own body was refused: "action" missing)."""
    from fastapi.testclient import TestClient

    from agentcycle.app import create_app

    client = TestClient(create_app(agent_factory(), ui=False))
    thread = client.post("/v1/ask", json={"question": "When is the deposit returned?"}).json()
    assert thread["status"] == "interrupted", thread
    url = f"/v1/workflows/{thread['metadata']['thread_id']}/resume"
    no_reason = client.post(url, json={"decision": "reject"})
    assert no_reason.status_code == 400 and "needs a reason" in no_reason.json()["detail"]
    done = client.post(url, json={"decision": "edit", "text": "Within 21 days."})
    assert done.status_code == 200, done.text
    assert (done.json()["status"], done.json()["answer"]) == ("completed", "Within 21 days.")
    assert client.post(url, json={"decision": "approve"}).status_code == 409
    assert client.post("/v1/workflows/nope/resume",
                       json={"decision": "approve"}).status_code == 404


@pytest.mark.slow
def test_real_model_reaches_the_approval(wf_settings, base_server):
    from agentcycle.router import Router
    from agentcycle.router.backends import local_backend

    router = Router([local_backend("base", base_server.base_url, "base", "test-key")],
                    log_path=False)
    try:
        with build_workflow_agent(wf_settings, router, max_iterations=1, max_tokens=32,
                                  required_terms=("deposit",)) as agent:
            result = agent.run("In one sentence: what is a security deposit?")
    finally:
        router.close()
    assert result.status == "interrupted", result.error
    assert result.metadata["draft"] and result.completion_tokens > 0
    assert result.backend == "base" and result.trace_id
    assert names(result)[:3] == ["research", "draft", "review"]
