"""A request's own ``max_tokens`` (bounded by the app's policy) reaches the model: the RAG
and tool agents use it for that answer instead of their default."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from agentcycle.agents import ToolAgent
from agentcycle.app import AppPolicy, create_app
from agentcycle.rag import RagAgent, ingest
from agentcycle.router import Router
from agentcycle.router.backends import local_backend
from helpers import BackgroundServer, chat_app

KEY = {"Authorization": "Bearer alice-key-0001"}


@pytest.fixture
def model():
    with BackgroundServer(chat_app(lambda body: {"content": "21 days."})) as server:
        yield server


def sent_max_tokens(model) -> list[int]:
    return [body.get("max_tokens") for body in model.server.config.app.state.requests]


def ask(agent, **body) -> None:
    app = create_app(agent, ui=False,
                     policy=AppPolicy(api_keys={"alice": "alice-key-0001"}, max_tokens=64))
    response = TestClient(app).post("/v1/ask", json={"question": "Deposit?", **body},
                                    headers=KEY)
    assert response.status_code == 200, response.text


def test_the_tool_agent_answers_within_the_requests_max_tokens(model, settings):
    def lookup(term: str) -> str:
        """Look a term up."""
        return "21 days"

    router = Router([local_backend("fake", model.url + "/v1", "fake")], tracing=False)
    agent = ToolAgent(router, [lookup], settings=settings, max_tokens=32)
    ask(agent, max_tokens=48)
    ask(agent)
    assert sent_max_tokens(model) == [48, 32]
    router.close()


@pytest.mark.slow  # the bundled embedding model, a real ingest
def test_the_rag_agent_answers_within_the_requests_max_tokens(model, settings, embedder,
                                                              tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "act.md").write_text("# Act\n\n## § 7. Deposits\nA landlord returns the "
                                   "security deposit within 21 days.\n")
    ingest(corpus, "act", settings, embedder=embedder)
    router = Router([local_backend("fake", model.url + "/v1", "fake")], tracing=False)
    agent = RagAgent(settings, "act", router, embedder=embedder, max_tokens=32)
    ask(agent, max_tokens=48)
    ask(agent)
    assert sent_max_tokens(model) == [48, 32]
    router.close()
