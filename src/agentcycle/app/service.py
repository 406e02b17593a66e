"""The agent as a service: ``POST /v1/ask``, ``GET /health`` (the platform's health
contract), OpenAPI docs at ``/docs`` and a Gradio chat UI at ``/ui``."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from agentcycle.errors import AgentcycleError
from agentcycle.rag.agent import Answer

SERVICE_NAME = "agentcycle-agent"


class AskRequest(BaseModel):
    question: str = Field(..., min_length=1, max_length=4000)


class Health(BaseModel):
    status: str
    component: str
    service: str


def create_app(agent, *, ui: bool = True, title: str = "agentcycle agent") -> FastAPI:
    """``agent`` is anything with ``ask(question) -> Answer`` (a :class:`RagAgent`)."""
    app = FastAPI(title=title, version="0.1.0",
                  description="A RAG agent served by agentcycle.")

    @app.get("/health", response_model=Health)
    def health() -> Health:
        return Health(status="healthy", component="agent", service=SERVICE_NAME)

    @app.post("/v1/ask", response_model=Answer)
    def ask(request: AskRequest) -> Answer:
        try:
            return agent.ask(request.question)
        except AgentcycleError as exc:  # a backend down etc.: say so, not a bare 500
            raise HTTPException(status_code=503, detail=str(exc)) from None

    if ui:
        _mount_ui(app, agent.ask)
    return app


def _mount_ui(app: FastAPI, ask: Callable[[str], Answer]) -> None:
    import gradio as gr

    def respond(message: str, history: list) -> str:
        try:
            answer = ask(message)
        except AgentcycleError as exc:
            return f"error: {exc}"
        sources = "\n".join(f"- {s.source} {s.heading}" for s in answer.sources)
        return f"{answer.answer}\n\n**Sources**\n{sources}"

    chat = gr.ChatInterface(respond, title="agentcycle agent",
                            description="Ask the RAG agent; answers cite their sources.")
    gr.mount_gradio_app(app, chat, path="/ui")
