from fastapi.testclient import TestClient

from agentcycle.app import create_app


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
