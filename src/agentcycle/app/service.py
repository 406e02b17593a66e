"""Any agent as a service: ``POST /v1/ask``, ``POST /v1/feedback`` (a score on an
answer's trace), ``GET /v1/stats`` (requests, refusals and tokens per key name),
``GET /health`` (the platform's health contract), ``GET /ready`` (the model, Qdrant and
NATS the agent depends on), OpenAPI docs at ``/docs`` and a Gradio chat UI at ``/ui``.
A workflow agent also gets ``POST /v1/workflows/{thread_id}/resume`` for its approval
step. An :class:`~agentcycle.app.policy.AppPolicy` decides who gets in and how much
(keys, rates, budgets, sizes, concurrency, CORS): see :mod:`agentcycle.app.guard`."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, create_model

from agentcycle.agents import Agent, AgentResult
from agentcycle.app.feedback import FeedbackReceipt, FeedbackRequest, record_feedback
from agentcycle.app.guard import BodyTooLarge, Guard, GuardMiddleware, too_large
from agentcycle.app.policy import ANONYMOUS, AppPolicy
from agentcycle.app.ui import render  # noqa: F401  (its former home)
from agentcycle.errors import AgentcycleError
from agentcycle.router.state import RouterState

SERVICE_NAME = "agentcycle-agent"

ReadyCheck = Callable[[], None]  # raises when the dependency is not usable


class AskRequest(BaseModel):
    question: str = Field(..., min_length=1, max_length=4000)
    max_tokens: int | None = Field(None, ge=1, le=1024, description=(
        "A cap on each model call, for agents that take one; bounded by the app's policy."))


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


def ask_model(policy: AppPolicy) -> type[AskRequest]:
    """``AskRequest`` with the policy's bounds (a 422 names the one exceeded)."""
    return create_model(  # type: ignore[call-overload,no-any-return]
        "AskRequest", __base__=AskRequest,
        question=(str, Field(..., min_length=1, max_length=policy.max_question_chars)),
        max_tokens=(int | None, Field(None, ge=1, le=policy.max_tokens, description=(
            "A cap on each model call, for agents that take one."))))


def create_app(agent: Agent, *, ui: bool = True, title: str = "agentcycle agent",
               ready_checks: dict[str, ReadyCheck] | None = None,
               policy: AppPolicy | None = None, state: RouterState | None = None
               ) -> FastAPI:
    """``agent`` is any :class:`~agentcycle.agents.Agent`; ``ready_checks`` name what it
    depends on (``{"model": ..., "qdrant": ..., "nats": ...}``), each raising if down;
    ``policy`` (default: ``AppPolicy()``, open with bounds) who may call and how much;
    ``state`` where per-key rates and token budgets are counted (default: this process;
    ``router.shared_state.open_state(settings)`` shares them on Redis/Valkey)."""
    kind = getattr(agent, "kind", "agent")
    app = FastAPI(title=title, version="0.1.0",
                  description=f"A {kind} agent served by agentcycle.")
    checks = dict(ready_checks or {})
    guard = Guard(policy or AppPolicy(), state)
    app.state.guard = guard
    app.add_middleware(GuardMiddleware, guard=guard)
    if guard.policy.cors_origins:  # outermost: a preflight is answered before the guard
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=guard.policy.cors_origins,
                           allow_methods=["GET", "POST"],
                           allow_headers=["authorization", "content-type", "x-api-key"])
    Ask = ask_model(guard.policy)

    @app.exception_handler(RequestValidationError)
    def invalid(request: Any, exc: RequestValidationError) -> JSONResponse:
        # FastAPI echoes each bad value whole: a 2 MB question came back as a 2 MB 422.
        errors = [{**e, "input": _clip(e.get("input"))} for e in exc.errors()]
        try:
            return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)
        except (ValueError, UnicodeError):  # an input that is no JSON (NaN deep inside)
            plain = [{k: v for k, v in e.items() if k not in ("input", "ctx")}
                     for e in errors]
            return JSONResponse({"detail": jsonable_encoder(plain)}, status_code=422)

    @app.exception_handler(BodyTooLarge)
    def body_too_large(request: Any, exc: BodyTooLarge) -> JSONResponse:
        guard.usage.refused(_caller(request), 413)
        return too_large(exc.limit)

    @app.get("/health", response_model=Health)
    def health() -> Health:
        return Health(status="healthy", component="agent", service=SERVICE_NAME)

    @app.get("/ready", response_model=Ready, responses={503: {"model": Ready}})
    def ready() -> JSONResponse:
        report = run_checks(checks)
        status = 200 if report.status == "ready" else 503
        return JSONResponse(report.model_dump(), status_code=status)

    async def ask(body: AskRequest, request: Request) -> AgentResult:
        options = {"max_tokens": body.max_tokens} if body.max_tokens else {}
        return await _run(guard, _caller(request), agent,
                    lambda: agent.run(body.question, **options), body.question)

    # the body model carries this policy's bounds (annotations are strings here)
    ask.__annotations__ = {"body": Ask, "request": Request, "return": AgentResult}
    app.post("/v1/ask", response_model=AgentResult)(ask)

    @app.post("/v1/feedback", response_model=FeedbackReceipt)
    def feedback(body: FeedbackRequest, request: Request) -> FeedbackReceipt:
        from agentcycle.settings import Settings

        settings = getattr(agent, "settings", None) or Settings()
        try:
            return record_feedback(settings, body, source=_caller(request))
        except AgentcycleError as exc:
            status = 404 if "no trace" in str(exc) else _status(exc)
            raise HTTPException(status_code=status, detail=str(exc)) from None

    @app.get("/v1/stats")
    async def stats() -> dict[str, Any]:
        """Requests answered and refused (by status) and today's tokens, per key name."""
        return await guard.usage.report(guard.budget, guard.slots)

    resume = getattr(agent, "resume", None)
    if callable(resume):
        @app.post("/v1/workflows/{thread_id}/resume", response_model=AgentResult)
        async def resume_workflow(thread_id: str, body: ResumeRequest, request: Request
                                  ) -> AgentResult:
            # The workflow's Decision names the choice "action"; the API says "decision".
            decision = {"action": body.decision, "text": body.text, "reason": body.reason}
            return await _run(guard, _caller(request), agent,
                              lambda: resume(thread_id, decision), f"resume {thread_id}")

    if ui:
        from agentcycle.app.ui import mount_ui

        mount_ui(app, agent, guard)
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


async def _run(guard: Guard, name: str, agent: Agent, call: Callable[[], AgentResult],
               question: str) -> AgentResult:
    """Run the agent in a worker thread (in a trace that names the caller's key), then
    count its tokens against the key's budget."""
    def traced() -> AgentResult:
        with _key_trace(agent, name, question) as root:
            result = call()
            if root is not None:
                root.set_outputs({"answer": result.answer})
        return result

    try:
        result = await run_in_threadpool(traced)
    except AgentcycleError as exc:  # a backend down, an unknown thread: say so, not a 500
        status = _status(exc)
        raise HTTPException(status_code=status, detail=str(exc), headers={
            "Retry-After": "10"} if status == 503 else None) from None
    await guard.answered(name, result.total_tokens)
    return result


@contextlib.contextmanager
def _key_trace(agent: Agent, name: str, question: str) -> Iterator[Any]:
    """With a key, the agent's run nests in a root span tagged with the key's name
    (``agentcycle.api_key``, and MLflow's trace user): traces say who asked."""
    if name == ANONYMOUS:
        yield None
        return
    import mlflow

    from agentcycle.observe.tracing import span

    with span("agent app", "CHAIN", inputs={"question": question},
              attributes={"agentcycle.api_key": name},
              settings=getattr(agent, "settings", None)) as root:
        mlflow.update_current_trace(tags={"agentcycle.api_key": name}, user=name)
        yield root


def _caller(request: Request) -> str:
    return str(getattr(request.state, "api_key_name", ANONYMOUS))


def _status(exc: AgentcycleError) -> int:
    from agentcycle.agents.workflow.decisions import ThreadFinished, ThreadNotFound
    from agentcycle.errors import ConfigError, DataError

    if isinstance(exc, ThreadNotFound):
        return 404
    if isinstance(exc, ThreadFinished):
        return 409  # the thread is there, in a state that admits no decision
    return 400 if isinstance(exc, ConfigError | DataError) else 503


def _clip(value: Any, limit: int = 200) -> Any:
    if isinstance(value, bytes | bytearray):  # a body that is not JSON (invalid UTF-8 too)
        value = bytes(value[:limit * 4]).decode("utf-8", "replace")
    if isinstance(value, float) and not math.isfinite(value):  # NaN: not JSON to echo
        return str(value)
    text = value if isinstance(value, str) else None
    return text[:limit] + f"... ({len(text)} characters)" if text and len(text) > limit \
        else value
