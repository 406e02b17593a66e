"""The router as an OpenAI-compatible server: any OpenAI, LangChain or CrewAI client
works by pointing its ``base_url`` here.

    POST /v1/chat/completions   JSON or SSE streaming; tools/tool_choice pass through
    GET  /v1/models             route names and backend names (both are valid `model`s)
    POST /v1/feedback           {"request_id", "score"}: quality for A/B reports
    GET  /health

The request's ``model`` picks the route; the sticky A/B key is the request's ``user``
or the ``x-session-id`` header; ``x-agentcycle-tags: a,b`` adds required tags.
Responses carry ``x-agentcycle-backend`` and ``x-agentcycle-request-id``. Errors are
OpenAI error JSON with a real status code. Bodies go through orjson as plain dicts
(no pydantic round trip): per-request overhead is what the proxy's speed goal is about.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from agentcycle.errors import ConfigError, DataError
from agentcycle.router.router import AllBackendsFailed, Router
from agentcycle.router.streaming import Stream, StreamInterrupted

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                404: "invalid_request_error", 429: "rate_limit_error"}


def error_body(status: int, message: str, code: str | None = None) -> bytes:
    kind = _ERROR_TYPES.get(status, "api_error")
    return orjson.dumps({"error": {"message": message, "type": kind, "code": code or status,
                                   "param": None}})


def error_response(status: int, message: str, code: str | None = None) -> Response:
    return Response(error_body(status, message, code), status, media_type="application/json")


def create_proxy_app(router: Router, api_key: str | None = None) -> Starlette:
    """The proxy's ASGI app; ``api_key``: refuse requests without this bearer key."""

    def refused(request: Request) -> Response | None:
        if not api_key:
            return None
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if secrets.compare_digest(given.encode(), api_key.encode()):
            return None
        return error_response(401, "invalid or missing API key", "invalid_api_key")

    async def chat(request: Request) -> Response:
        if (denied := refused(request)) is not None:
            return denied
        try:
            payload = orjson.loads(await request.body())
            messages = payload.pop("messages")
            if not isinstance(messages, list) or not messages:
                raise ValueError
        except (orjson.JSONDecodeError, KeyError, ValueError, AttributeError, TypeError):
            return error_response(400, "the body must be JSON with a non-empty `messages` list")
        model = payload.pop("model", None)
        streamed = bool(payload.pop("stream", False))
        options = {"route": model, "key": request.headers.get("x-session-id")
                   or payload.get("user"), "tags": _tags(request)}
        try:
            if streamed:
                return await _stream(router, messages, payload, options)
            result = await router.acomplete(messages, **options, **payload)
        except AllBackendsFailed as exc:
            return error_response(exc.status, str(exc), _failure_code(exc))
        except ConfigError as exc:  # an unknown model or route
            return error_response(404, str(exc), "model_not_found")
        return Response(orjson.dumps(result.raw), media_type="application/json",
                        headers=_headers(result.backend, result.request_id))

    async def models(request: Request) -> Response:
        if (denied := refused(request)) is not None:
            return denied
        names = [*router.routes, *(b for b in router.by_name if b not in router.routes)]
        return Response(orjson.dumps({"object": "list", "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "agentcycle"}
            for name in names]}), media_type="application/json")

    async def feedback(request: Request) -> Response:
        if (denied := refused(request)) is not None:
            return denied
        try:
            body = orjson.loads(await request.body())
            request_id, score = str(body["request_id"]), float(body["score"])
        except (orjson.JSONDecodeError, KeyError, ValueError, TypeError):
            return error_response(400, 'the body must be {"request_id": "...", "score": <number>}')
        try:  # it waits for the log to be written: not on the event loop
            await asyncio.to_thread(router.record_feedback, request_id, score)
        except DataError as exc:
            return error_response(404, str(exc), "request_not_found")
        return Response(orjson.dumps({"ok": True}), media_type="application/json")

    async def health(request: Request) -> Response:
        return Response(orjson.dumps({"status": "ok", "cooling": router.state.cooling()}),
                        media_type="application/json")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        await router.aclose()

    return Starlette(routes=[
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/chat/completions", chat, methods=["POST"]),
        Route("/v1/models", models),
        Route("/models", models),
        Route("/v1/feedback", feedback, methods=["POST"]),
        Route("/health", health),
    ], lifespan=lifespan)


async def _stream(router: Router, messages: list, payload: dict[str, Any],
                  options: dict[str, Any]) -> Response:
    wants_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
    stream = await router.astream(messages, **options, **payload)
    return StreamingResponse(_sse(stream, wants_usage), media_type="text/event-stream",
                             headers=_headers(stream.backend.name, stream.request_id))


async def _sse(stream: Stream, wants_usage: bool) -> AsyncIterator[bytes]:
    try:
        async for chunk in stream:
            if not wants_usage and not chunk.get("choices") and chunk.get("usage"):
                continue  # we asked the backend for usage (accounting); the client did not
            yield b"data: " + orjson.dumps(chunk) + b"\n\n"
    except StreamInterrupted as exc:
        # Headers (200) are gone: an error event, and no [DONE], tells the client the
        # answer is incomplete instead of letting it look finished.
        yield b"data: " + error_body(502, str(exc), "stream_interrupted") + b"\n\n"
        return
    yield b"data: [DONE]\n\n"


def _headers(backend: str, request_id: str) -> dict[str, str]:
    return {"x-agentcycle-backend": backend, "x-agentcycle-request-id": request_id}


def _tags(request: Request) -> list[str]:
    raw = request.headers.get("x-agentcycle-tags", "")
    return [t.strip() for t in raw.split(",") if t.strip()]


def _failure_code(exc: AllBackendsFailed) -> str:
    return {429: "rate_limit_exceeded", 400: "context_length_exceeded",
            504: "timeout", 503: "no_backend_available"}.get(exc.status, "all_backends_failed")


def serve(router: Router, *, host: str = "127.0.0.1", port: int = 4000,
          api_key: str | None = None) -> None:
    """Run the proxy until Ctrl-C (uvicorn, no access log: it costs throughput)."""
    import uvicorn

    try:
        uvicorn.run(create_proxy_app(router, api_key), host=host, port=port,
                    log_level="warning", access_log=False)
    finally:
        router.close()


__all__ = ["create_proxy_app", "error_body", "error_response", "serve"]
