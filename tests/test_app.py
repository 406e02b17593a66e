from fastapi.testclient import TestClient

from agentcycle.agents import AgentResult, BaseAgent, ToolCallRecord
from agentcycle.app import create_app
from agentcycle.errors import ConfigError


def test_agent_app_answers_with_sources_and_meets_the_health_contract(legal_agent):
    client = TestClient(create_app(legal_agent))
    assert client.get("/health").json() == {
        "status": "healthy", "component": "agent", "service": "agentcycle-agent"}
    response = client.post("/v1/ask", json={"question": "What form does a tenant use to "
                                                        "start a dispute?"})
    assert response.status_code == 200
    body = response.json()
    assert body["answer"] and body["sources"] and body["completion_tokens"] > 0
    assert {"answer", "sources", "model", "latency_ms", "prompt_tokens", "completion_tokens",
            "cost_usd"} <= set(body)
    assert client.post("/v1/ask", json={"question": ""}).status_code == 422
    schema = client.get("/openapi.json").json()
    assert "/v1/ask" in schema["paths"] and "/health" in schema["paths"]
    ui = client.get("/ui/")
    assert ui.status_code == 200 and "gradio" in ui.text.lower()


def test_a_failing_backend_is_a_503_with_the_reason(legal_agent):
    from agentcycle.router import Router
    from agentcycle.router.backends import local_backend
    from agentcycle.serving.server import free_port

    legal_agent.router = Router([local_backend("down", f"http://127.0.0.1:{free_port()}/v1",
                                               "m")])
    response = TestClient(create_app(legal_agent, ui=False)).post(
        "/v1/ask", json={"question": "Anything?"})
    assert response.status_code == 503 and "every model backend failed" in response.json()["detail"]


class ScriptedWorkflow(BaseAgent):
    """An agent with an approval step, as the workflow agent has."""

    kind = "workflow"

    def run(self, task, **options):
        return AgentResult(answer="draft", kind=self.kind, status="interrupted",
                           metadata={"thread_id": "t1"})

    def resume(self, thread_id, decision):
        if thread_id != "t1":
            raise ConfigError(f"no workflow thread '{thread_id}'")
        return AgentResult(answer=decision.get("text", "draft"), kind=self.kind,
                           tool_calls=[ToolCallRecord(name="publish", arguments={"to": "x"})])


def test_ready_names_each_dependency_and_fails_with_503_when_one_is_down():
    def down():
        raise ConnectionError("connection refused")

    client = TestClient(create_app(ScriptedWorkflow(), ui=False,
                                   ready_checks={"model": lambda: None, "nats": down}))
    response = client.get("/ready")
    assert response.status_code == 503
    assert response.json() == {"status": "not ready", "checks": {
        "model": "ok", "nats": "unavailable: connection refused"}}
    ok = TestClient(create_app(ScriptedWorkflow(), ui=False,
                               ready_checks={"model": lambda: None}))
    assert ok.get("/ready").json() == {"status": "ready", "checks": {"model": "ok"}}


def test_a_workflow_agent_gets_a_resume_endpoint():
    client = TestClient(create_app(ScriptedWorkflow(), ui=False))
    first = client.post("/v1/ask", json={"question": "Draft a notice"}).json()
    assert (first["status"], first["metadata"]["thread_id"]) == ("interrupted", "t1")
    done = client.post("/v1/workflows/t1/resume", json={"decision": "edit", "text": "final"})
    assert done.status_code == 200 and done.json()["answer"] == "final"
    missing = client.post("/v1/workflows/nope/resume", json={"decision": "approve"})
    assert missing.status_code == 400 and "no workflow thread 'nope'" in missing.json()["detail"]
    assert client.post("/v1/workflows/t1/resume", json={"decision": "maybe"}).status_code == 422


def test_a_bad_body_is_a_422_that_does_not_echo_a_huge_input():
    client = TestClient(create_app(ScriptedWorkflow(), ui=False))
    long = client.post("/v1/ask", json={"question": "x" * 50_000})
    assert long.status_code == 422 and len(long.content) < 2000, len(long.content)
    assert long.json()["detail"][0]["type"] == "string_too_long"
    huge = client.post("/v1/ask", json={"question": "x" * 2_000_000})  # over the body bound
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "request_too_large"
    wrong = client.post("/v1/ask", json={"question": 5})
    assert wrong.status_code == 422 and wrong.json()["detail"][0]["input"] == 5
    invalid = client.post("/v1/ask", content=b"{bad", headers={"content-type": "application/json"})
    assert invalid.status_code == 422 and invalid.json()["detail"][0]["type"] == "json_invalid"


def test_the_ui_renders_tool_calls_sources_and_status():
    from agentcycle.app.service import render

    text = render(ScriptedWorkflow().resume("t1", {"text": "Done."}))
    assert text.startswith("Done.") and "`publish(to='x')`" in text
    assert "status: interrupted" in render(ScriptedWorkflow().run("x"))
