"""Every agent kind through one door: `agentcycle agent run KIND`, the app's /ready, and
the `agent:KIND` eval target, on the real bundled model (the session's server, named by
AGENTCYCLE_SERVER_URL as the platform would), the real NATS server and SQLite."""

from __future__ import annotations

import json

import pytest

from agentcycle.cli._common import quiet_libraries
from helpers import assert_clean_error, cli_run

quiet_libraries()  # as `agentcycle` does: no library progress bars in the output
run = cli_run


@pytest.fixture
def served(base_server_by_name, embedder):
    """The real model server, reached by name as a deployed agent reaches it."""
    from agentcycle.examples import LEGAL_COLLECTION, legal_corpus_dir
    from agentcycle.rag import ingest
    from agentcycle.settings import Settings

    ingest(legal_corpus_dir(), LEGAL_COLLECTION, Settings(), embedder=embedder)


def test_unknown_kinds_and_tools_are_one_error_line():
    assert_clean_error(*run("agent", "run", "nope", "q"), "nope")
    assert_clean_error(*run("agent", "run", "tools", "q", "--tool", "no_such_mod:fn"),
                       "no_such_mod")


USER_AGENTS = """
from agentcycle.agents import AgentResult, BaseAgent

class Echo(BaseAgent):
    kind = "echo"

    def run(self, task, **options):
        return AgentResult(answer=task.upper(), kind=self.kind)

def make(settings, options):          # the documented factory
    return Echo()

def broken(settings, options):
    raise RuntimeError("boom in factory")

class Raising(BaseAgent):
    def run(self, task, **options):
        raise ValueError("a bug in run")
"""


def test_a_users_agent_by_file_reference_documented_factory_class_or_broken(tmp_path):
    (tmp_path / "mine.py").write_text(USER_AGENTS)
    for name in ("make", "Echo"):  # make(settings, options), and an Agent class
        code, output = run("agent", "run", f"{tmp_path}/mine.py:{name}", "hi", "--json")
        assert code == 0 and json.loads(output)["answer"] == "HI", output
    code, output = run("agent", "run", f"{tmp_path}/mine.py:make", "[user's name] [/b]")
    assert code == 0 and "[USER'S NAME] [/B]" in output, output  # text, not Rich markup
    assert_clean_error(*run("agent", "run", f"{tmp_path}/mine.py:broken", "hi"),
                       "the factory raised RuntimeError: boom in factory")
    assert_clean_error(*run("agent", "run", f"{tmp_path}/mine.py:Raising", "hi"),
                       "raised ValueError: a bug in run", "AGENTCYCLE_DEBUG=1")


def test_app_and_serve_on_a_taken_port_are_one_error_line(tmp_path):
    import socket

    (tmp_path / "mine.py").write_text(USER_AGENTS)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        assert_clean_error(*run("app", "--agent", f"{tmp_path}/mine.py:make", "--port", port),
                           f"127.0.0.1:{port}")
        assert_clean_error(*run("serve", "--port", port), f"127.0.0.1:{port}")


def test_a_multi_worker_takes_the_documented_factory(tmp_path):
    from agentcycle.plugins import load_agent
    from agentcycle.session import AgentOptions
    from agentcycle.settings import Settings

    (tmp_path / "mine.py").write_text(USER_AGENTS)
    agent = load_agent(f"{tmp_path}/mine.py:make", Settings(), AgentOptions())
    assert agent.run("hi").answer == "HI"


def test_bad_agent_targets_are_one_error_line_before_any_model_starts():
    from agentcycle.errors import ConfigError
    from agentcycle.evals import open_target

    for target, message in [("agent:nope", "unknown agent 'nope'"),
                            ("agent:", "name the kind"),
                            ("agent:tools?bogus=1", "unknown option bogus"),
                            ("agent:tools?max_steps=abc", "must be a whole number"),
                            ("agent:tools?max_steps=0", "'max_steps' must be at least 1"),
                            ("agent:rag?top_k=-2", "'top_k' must be at least 1")]:
        with pytest.raises(ConfigError, match=message), open_target(target):
            pass


def test_multi_with_nats_unreachable_is_one_error_line(monkeypatch):
    monkeypatch.setenv("NATS_URL", "nats://127.0.0.1:9")
    assert_clean_error(*run("agent", "run", "multi", "q"), "NATS at nats://127.0.0.1:9 is "
                       "unreachable")


@pytest.mark.slow
def test_tools_kind_offers_the_legal_tools_to_the_real_model(served):
    code, output = run("agent", "run", "tools", "What does section 8 say?", "--json",
                       "--max-tokens", "24", "--max-steps", "2")
    result = json.loads(output)
    assert result["kind"] == "tools" and result["steps"][0]["kind"] == "llm"
    # Six tool schemas in the prompt (the gate renders them): well over a bare question.
    assert result["prompt_tokens"] > 800
    assert code == (1 if result["status"] == "failed" else 0)


@pytest.mark.slow
def test_multi_kind_merges_two_workers_answers_over_embedded_nats(served):
    code, output = run("agent", "run", "multi", "How long does a landlord have to return the "
                       "deposit? How much can the rent go up?", "--json", "--max-tokens", "16")
    assert code == 0, output
    result = json.loads(output)
    assert result["kind"] == "multi" and result["status"] == "completed"
    assert len(result["metadata"]["subtasks"]) == 2 and result["sources"]
    assert result["trace_id"] and result["completion_tokens"] > 0


@pytest.mark.slow
def test_workflow_kind_waits_for_approval_then_finishes(served):
    code, output = run("agent", "run", "workflow", "Draft a reply on the deposit deadline.",
                       "--json", "--max-tokens", "16", "--max-iterations", "1")
    assert code == 0, output
    pending = json.loads(output)
    assert pending["status"] == "interrupted"
    thread = pending["metadata"]["thread_id"]
    code, output = run("workflow", "approve", thread, "--json")
    assert code == 0, output
    assert json.loads(output)["status"] == "completed"
    assert_clean_error(*run("workflow", "approve", thread), thread)


@pytest.mark.slow
def test_the_app_serves_the_tool_agent_and_is_ready(served):
    from fastapi.testclient import TestClient

    from agentcycle.app import create_app
    from agentcycle.session import AgentOptions, agent_session
    from agentcycle.settings import Settings

    with agent_session(Settings(), "tools", AgentOptions(max_tokens=16, max_steps=1)) as s:
        client = TestClient(create_app(s.agent, ui=False, ready_checks=s.ready_checks))
        ready = client.get("/ready")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"model": "ok", "qdrant": "ok"}
        body = client.post("/v1/ask", json={"question": "Hello!"}).json()
        assert body["kind"] == "tools" and body["steps"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["multi", "workflow"])
def test_multi_and_workflow_runs_are_eval_targets(served, kind):
    from agentcycle.evals import Case, Suite, open_target
    from agentcycle.evals.runner import run_suite_sync

    suite = Suite(name="kinds", scorers=["step_count"], cases=[
        Case(id="deposit", input="How long does a landlord have to return the deposit?")])
    with open_target(f"agent:{kind}?max_tokens=16&max_iterations=1") as target:
        eval_run = run_suite_sync(suite, target, concurrency=1, retries=0)
    [case] = eval_run.results
    assert case.error is None and case.output.text and case.output.completion_tokens > 0
