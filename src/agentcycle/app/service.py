"""Any agent as a service: ``POST /v1/ask``, ``GET /health`` (the platform's health
contract), ``GET /ready`` (the model, Qdrant and NATS the agent depends on), OpenAPI
docs at ``/docs`` and a Gradio chat UI at ``/ui``. A workflow agent also gets
``POST /v1/workflows/{thread_id}/resume`` for its approval step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from fastapi import FastAPI, HTTPException
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from agentcycle.agents import Agent, AgentResult
from agentcycle.errors import AgentcycleError

SERVICE_NAME = "agentcycle-agent"

ReadyCheck = Callable[[], None]  # raises when the dependency is not usable


class AskRequest(BaseModel):
    question: str = Field(..., min_length=1, max_length=4000)


class ResumeRequest(BaseModel):
    decision: Literal["approve", "edit", "reject"]
    text: str | None = Field(None, max_length=20000, description="The edited answer (edit).")
    reason: str | None = Field(None, max_length=2000, description="Why (reject).")


class Health(BaseModel):
    status: str
    component: str
    service: str


class Ready(BaseModel):
    status: Literal["ready", "not ready"]
    checks: dict[str, str]


def create_app(agent: Agent, *, ui: bool = True, title: str = "agentcycle agent",
               ready_checks: dict[str, ReadyCheck] | None = None) -> FastAPI:
    """``agent`` is any :class:`~agentcycle.agents.Agent`; ``ready_checks`` name what it
    depends on (``{"model": ..., "qdrant": ..., "nats": ...}``), each raising if down."""
    kind = getattr(agent, "kind", "agent")
    app = FastAPI(title=title, version="0.1.0",
                  description=f"A {kind} agent served by agentcycle.")
    checks = dict(ready_checks or {})

    @app.exception_handler(RequestValidationError)
    def invalid(request: Any, exc: RequestValidationError) -> JSONResponse:
        # FastAPI echoes each bad value whole: a 2 MB question came back as a 2 MB 422.
        errors = [{**e, "input": _clip(e.get("input"))} for e in exc.errors()]
        return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)

    @app.get("/health", response_model=Health)
    def health() -> Health:
        return Health(status="healthy", component="agent", service=SERVICE_NAME)

    @app.get("/ready", response_model=Ready, responses={503: {"model": Ready}})
    def ready() -> JSONResponse:
        report = run_checks(checks)
        status = 200 if report.status == "ready" else 503
        return JSONResponse(report.model_dump(), status_code=status)

    @app.post("/v1/ask", response_model=AgentResult)
    def ask(request: AskRequest) -> AgentResult:
        return _answer(lambda: agent.run(request.question))

    resume = getattr(agent, "resume", None)
    if callable(resume):
        @app.post("/v1/workflows/{thread_id}/resume", response_model=AgentResult)
        def resume_workflow(thread_id: str, request: ResumeRequest) -> AgentResult:
            # The workflow's Decision names the choice "action"; the API says "decision".
            decision = {"action": request.decision, "text": request.text,
                        "reason": request.reason}
            return _answer(lambda: resume(thread_id, decision))

    if ui:
        _mount_ui(app, agent)
    return app


def run_checks(checks: dict[str, ReadyCheck]) -> Ready:
    results: dict[str, str] = {}
    for name, check in checks.items():
        try:
            check()
            results[name] = "ok"
        except Exception as exc:  # a readiness probe reports, it never raises
            results[name] = f"unavailable: {exc}"[:300]
    ok = all(value == "ok" for value in results.values())
    return Ready(status="ready" if ok else "not ready", checks=results)


def _answer(call: Callable[[], AgentResult]) -> AgentResult:
    try:
        return call()
    except AgentcycleError as exc:  # a backend down, an unknown thread: say so, not a 500
        raise HTTPException(status_code=_status(exc), detail=str(exc)) from None


def _status(exc: AgentcycleError) -> int:
    from agentcycle.agents.workflow.decisions import ThreadFinished, ThreadNotFound
    from agentcycle.errors import ConfigError, DataError

    if isinstance(exc, ThreadNotFound):
        return 404
    if isinstance(exc, ThreadFinished):
        return 409  # the thread is there, in a state that admits no decision
    return 400 if isinstance(exc, ConfigError | DataError) else 503


def render(result: AgentResult) -> str:
    """An agent result as chat markdown: the answer, tool calls, sources, status."""
    parts = [result.answer or "_(no answer)_"]
    if result.tool_calls:
        parts.append("**Tool calls**\n" + "\n".join(
            f"- `{c.name}({_args(c.arguments)})`" + (f" failed: {c.error}" if c.error else "")
            for c in result.tool_calls))
    if result.sources:
        parts.append("**Sources**\n" + "\n".join(
            f"- {s.source} {s.heading}".rstrip() for s in result.sources))
    if result.status != "completed":
        thread = result.metadata.get("thread_id")
        parts.append(f"_status: {result.status}_" + (f" (thread `{thread}`)" if thread else "")
                     + (f": {result.error}" if result.error else ""))
    return "\n\n".join(parts)


def _clip(value: Any, limit: int = 200) -> Any:
    text = value if isinstance(value, str) else None
    return text[:limit] + f"... ({len(text)} characters)" if text and len(text) > limit \
        else value


def _args(arguments: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in arguments.items())


def _mount_ui(app: FastAPI, agent: Agent) -> None:
    import gradio as gr

    def respond(message: str, history: list) -> str:
        try:
            return render(agent.run(message))
        except AgentcycleError as exc:
            return f"error: {exc}"

    kind = getattr(agent, "kind", "agent")
    chat = gr.ChatInterface(respond, title=f"agentcycle {kind} agent",
                            description="Answers show the tool calls and sources behind them.")
    gr.mount_gradio_app(app, chat, path="/ui")
