"""The app's front door: an ASGI middleware that admits a request or refuses it with
a JSON error in OpenAI's format (``{"error": {"message", "type", "code"}}``, plus
FastAPI's ``detail``) before any agent work starts.

In order: the key (401), the body size (413: ``Content-Length`` first, then the bytes
as they arrive, so a chunked body is cut off too), the key's rate (429) and token
budget (429), then a run slot for the agent endpoints (503 when the queue is full or
the wait too long). Every 429 and 503 carries ``Retry-After``. ``/health`` and
``/ready`` (the platform probes them) and the API docs stay open; the Gradio UI under
``/ui`` has its own login with the same keys (user: the key's name, password: the key).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentcycle._http import BodyRefused, lone_surrogate, openai_error, read_body, replay
from agentcycle.app.limits import Overloaded, RateLimiter, RunSlots, TokenBudget, Usage
from agentcycle.app.policy import ANONYMOUS, AppPolicy
from agentcycle.router.state import RouterState

OPEN_PATHS = frozenset({"/health", "/ready", "/docs", "/docs/oauth2-redirect",
                        "/openapi.json", "/redoc"})
UI_PREFIX = "/ui"
_RUN_PREFIXES = ("/v1/ask", "/v1/workflows/")


class Guard:
    """The policy and the counters, shared by the middleware, the handlers and the UI
    (``app.state.guard``); rates and token budgets in ``state`` (default: this
    process's; a Redis state shares them between replicas)."""

    def __init__(self, policy: AppPolicy, state: RouterState | None = None):
        self.policy = policy
        self.state = state or RouterState()
        self.rate = RateLimiter(policy, self.state)
        self.budget = TokenBudget(policy, self.state)
        self.slots = RunSlots(policy)
        self.usage = Usage()

    async def admit(self, name: str, bucket: str | None = None, *, runs: bool = True
                    ) -> Refusal | None:
        """None, or the 429 refusing ``name`` (rate, then today's token budget)."""
        wait = await self.rate.check(name, bucket)
        if wait is not None:
            return self.refuse(name, 429, f"key '{name}' is over its rate limit of "
                               f"{self.policy.rpm_for(name)} requests per minute",
                               "rate_limit_exceeded", "rate_limit_exceeded", wait)
        wait = await self.budget.check(name) if runs else None
        if wait is not None:
            return self.refuse(name, 429, f"key '{name}' has spent its "
                               f"{self.policy.tokens_for(name)} tokens for today (UTC)",
                               "insufficient_quota", "insufficient_quota", wait)
        return None

    async def answered(self, name: str, tokens: int) -> None:
        """Count an answered request and the tokens it spent against the key's budget."""
        await self.budget.spend(name, tokens)
        self.usage.answered(name)

    def refuse(self, name: str, status: int, message: str, kind: str, code: str,
               retry_after_s: float | None = None) -> Refusal:
        self.usage.refused(name, status)
        return Refusal(status, message, kind, code, retry_after_s)


@dataclass
class Refusal:
    status: int
    message: str
    kind: str
    code: str
    retry_after_s: float | None = None

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, self.kind, self.code,
                              self.retry_after_s)


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"the request body is larger than {limit} bytes")
        self.limit = limit


def error_body(message: str, kind: str, code: str) -> dict[str, Any]:
    """OpenAI's error object (:mod:`agentcycle._http`), plus FastAPI's ``detail``."""
    return {**openai_error(400, message, code, kind), "detail": message}


def error_response(status: int, message: str, kind: str, code: str,
                   retry_after_s: float | None = None) -> JSONResponse:
    headers = {"Retry-After": str(max(1, math.ceil(retry_after_s)))} \
        if retry_after_s is not None else {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(error_body(message, kind, code), status_code=status, headers=headers)


def too_large_message(limit: int) -> str:
    return f"the request body is larger than {limit} bytes: send a shorter one"


def too_large(limit: int) -> JSONResponse:
    return error_response(413, too_large_message(limit), "invalid_request_error",
                          "request_too_large")


def presented_key(headers: Headers) -> str | None:
    auth = headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("x-api-key") or None


class GuardMiddleware:
    def __init__(self, app: ASGIApp, guard: Guard):
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        guard, path = self.guard, scope["path"]
        headers = Headers(scope=scope)
        name, refusal = ANONYMOUS, None
        protected = path not in OPEN_PATHS and not path.startswith(UI_PREFIX)
        if protected and not guard.policy.open:
            found = guard.policy.identify(presented_key(headers))
            if found is None:
                refusal = guard.refuse(
                    "unknown key" if presented_key(headers) else "no key", 401,
                    "a valid API key is required: send 'Authorization: Bearer KEY' "
                    "(or 'X-API-Key: KEY')", "authentication_error", "invalid_api_key")
            else:
                name = found
        limit = guard.policy.max_body_bytes
        if refusal is None and _declared_size(headers) > limit:
            refusal = guard.refuse(name, 413, too_large_message(limit),
                                   "invalid_request_error", "request_too_large")
        if refusal is None and protected:
            client = scope.get("client") or ("?", 0)
            bucket = f"{ANONYMOUS}@{client[0]}" if name == ANONYMOUS else None
            refusal = await guard.admit(name, bucket, runs=path.startswith(_RUN_PREFIXES))
        if refusal is not None:
            await refusal.response()(scope, receive, send)
            return
        scope.setdefault("state", {})["api_key_name"] = name
        try:  # the whole body before a run slot: a client trickling it holds none
            body = await read_body(receive, limit, guard.policy.body_timeout_s)
        except BodyRefused as exc:
            code = "request_too_large" if exc.status == 413 else "request_timeout"
            await guard.refuse(name, exc.status, str(exc), "invalid_request_error", code
                               ).response()(scope, receive, send)
            return
        if lone_surrogate(body):
            await guard.refuse(name, 400, "the request body holds a lone UTF-16 surrogate "
                               "escape (\\ud800-\\udfff): send valid Unicode",
                               "invalid_request_error", "invalid_unicode"
                               ).response()(scope, receive, send)
            return
        receive = replay(body, receive)
        if not path.startswith(_RUN_PREFIXES):
            await self._bounded(scope, receive, send, limit, name)
            return
        try:
            async with guard.slots.slot():
                await self._bounded(scope, receive, send, limit, name)
        except Overloaded as exc:
            await guard.refuse(name, 503, f"{exc}: retry later", "server_overloaded",
                               "server_overloaded", exc.retry_after_s
                               ).response()(scope, receive, send)

    async def _bounded(self, scope: Scope, receive: Receive, send: Send, limit: int,
                       name: str) -> None:
        """Run the app with the body cut off at ``limit`` bytes, however it is sent."""
        received, started = 0, False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except BodyTooLarge:
            if started:
                raise
            self.guard.usage.refused(name, 413)
            await too_large(limit)(scope, receive, send)


def _declared_size(headers: Headers) -> int:
    try:
        return int(headers.get("content-length", "0"))
    except ValueError:
        return 0
