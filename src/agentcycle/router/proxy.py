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
import logging
import math
import secrets
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from agentcycle._http import (
    BODY_TIMEOUT_S,
    EXCEPTION_HANDLERS,
    MAX_BODY_BYTES,
    BodyRefused,
    declared_size,
    openai_error_bytes,
    read_body,
    too_large_message,
)
from agentcycle.errors import ConfigError, DataError, ServiceError
from agentcycle.router.attempts import AllBackendsFailed
from agentcycle.router.router import Router
from agentcycle.router.streaming import Stream, StreamInterrupted

log = logging.getLogger(__name__)

def error_body(status: int, message: str, code: str | None = None) -> bytes:
    return openai_error_bytes(status, message, code or status,
                              None if status in (400, 401, 404, 405, 408, 413, 429)
                              else "api_error")


def error_response(status: int, message: str, code: str | None = None) -> Response:
    return Response(error_body(status, message, code), status, media_type="application/json")


def create_proxy_app(router: Router, api_key: str | None = None, *,
                     max_body_bytes: int = MAX_BODY_BYTES,
                     body_timeout_s: float = BODY_TIMEOUT_S) -> ASGIApp:
    """The proxy's ASGI app; ``api_key``: refuse requests without this bearer key; a
    body over ``max_body_bytes`` is a 413, one not all there in ``body_timeout_s`` a 408.

    Chat completions take a raw-ASGI path (no routing, middleware or Request object:
    ~60 us less per request, measured); the rest is a plain Starlette app."""
    expected = f"Bearer {api_key}".encode() if api_key else None

    def allowed(authorization: bytes) -> bool:
        return expected is None or secrets.compare_digest(authorization.strip(), expected)

    async def chat(scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope["headers"])
        if not allowed(headers.get(b"authorization", b"")):
            return await _send_json(send, 401, error_body(401, "invalid or missing API key",
                                                          "invalid_api_key"))
        if declared_size(headers.get(b"content-length")) > max_body_bytes:
            return await _send_json(send, 413, error_body(
                413, too_large_message(max_body_bytes), "request_too_large"))
        try:
            raw = await read_body(receive, max_body_bytes, body_timeout_s)
        except BodyRefused as exc:
            return await _send_json(send, exc.status, error_body(
                exc.status, str(exc), "request_too_large" if exc.status == 413
                else "request_timeout"))
        try:
            payload = orjson.loads(raw)
            messages = payload.pop("messages")
            if not isinstance(payload.get("model", ""), str | None):
                raise ValueError
            if not isinstance(messages, list) or not messages or not all(
                    isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
                raise ValueError
        except (orjson.JSONDecodeError, KeyError, ValueError, AttributeError, TypeError):
            return await _send_json(send, 400, error_body(
                400, "the body must be JSON with a string `model` and a non-empty `messages` "
                     'list of {"role": ..., "content": ...} objects'))
        if refused_params := sorted(set(payload) - _CLIENT_PARAMS):
            # Not passed on: `base_url`/`api_key` would redirect the backend's key, and
            # `timeout`/`route`/... clash with the router's own arguments.
            return await _send_json(send, 400, error_body(
                400, f"unsupported parameter(s): {', '.join(refused_params)}",
                "unsupported_parameter"))
        session = headers.get(b"x-session-id")
        options = {"route": payload.pop("model", None),
                   "key": session.decode("latin-1") if session else payload.get("user"),
                   "tags": _tags(headers.get(b"x-agentcycle-tags", b""))}
        try:
            router.resolve(options["route"])
        except ConfigError as exc:  # an unknown model or route
            return await _send_json(send, 404, error_body(404, str(exc), "model_not_found"))
        stream: Response | None = None
        try:
            if payload.pop("stream", False):
                stream = await _stream(router, messages, payload, options)
            else:
                result = await router.acomplete(messages, **options, **payload)
        except AllBackendsFailed as exc:
            wait = {"retry-after": str(math.ceil(exc.retry_after_s))} if exc.retry_after_s \
                else None
            return await _send_json(send, exc.status,
                                    error_body(exc.status, str(exc), _failure_code(exc)), wait)
        except Exception as exc:  # a policy failing (say, its model file went away)
            log.exception("router proxy: the request failed before any backend answered")
            return await _send_json(send, 500, error_body(
                500, f"the router failed: {type(exc).__name__}: {exc}", "router_error"))
        if stream is not None:  # past this point the status line is sent: errors go in-band
            return await stream(scope, receive, send)
        await _send_json(send, 200, orjson.dumps(result.raw),
                         _headers(result.backend, result.request_id))

    def refused(request: Request) -> Response | None:
        if allowed(request.headers.get("authorization", "").encode()):
            return None
        return error_response(401, "invalid or missing API key", "invalid_api_key")

    async def models(request: Request) -> Response:
        if (denied := refused(request)) is not None:
            return denied
        names = [*router.routes, *(b for b in router.by_name
                                  if router.expose_backends and b not in router.routes)]
        return Response(orjson.dumps({"object": "list", "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "agentcycle"}
            for name in names]}), media_type="application/json")

    async def feedback(request: Request) -> Response:
        if (denied := refused(request)) is not None:
            return denied
        try:
            raw = await read_body(request.receive, max_body_bytes, body_timeout_s)
        except BodyRefused as exc:
            return exc.response()
        try:
            body = orjson.loads(raw)
            request_id, score = str(body["request_id"]), float(body["score"])
            if not math.isfinite(score):  # "NaN" parses, and would poison every mean
                raise ValueError
        except (orjson.JSONDecodeError, KeyError, ValueError, TypeError):
            return error_response(400, 'the body must be {"request_id": "...", "score": <number>}')
        try:  # it waits for the log to be written: not on the event loop
            await asyncio.to_thread(router.record_feedback, request_id, score)
        except DataError as exc:
            return error_response(404, str(exc), "request_not_found")
        return Response(orjson.dumps({"ok": True}), media_type="application/json")

    async def health(request: Request) -> Response:
        cooling = await router.state.acooling_among(list(router.by_name))
        return Response(orjson.dumps({"status": "ok", "cooling": sorted(cooling),
                                      "state": router.state.describe()}),
                        media_type="application/json")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        await router.aclose()

    rest = Starlette(routes=[
        Route("/v1/models", models),
        Route("/models", models),
        Route("/v1/feedback", feedback, methods=["POST"]),
        Route("/health", health),
    ], lifespan=lifespan, exception_handlers=EXCEPTION_HANDLERS)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in _CHAT_PATHS:
            if scope["method"] != "POST":
                return await _send_json(send, 405, error_body(405, "use POST"))
            return await chat(scope, receive, send)
        if scope["type"] == "http" and scope["path"] not in _REST_PATHS:
            return await _send_json(send, 404, error_body(
                404, f"no such endpoint {scope['path']} (the proxy serves "
                     "/v1/chat/completions, /v1/models, /v1/feedback)", "not_found"))
        await rest(scope, receive, send)

    return app


_CHAT_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})
_REST_PATHS = frozenset({"/v1/models", "/models", "/v1/feedback", "/health"})
# What a client may send besides `messages`: the OpenAI chat-completions parameters (and
# the sampling extras vLLM and transformers accept). Anything else is refused by name,
# as OpenAI does, rather than handed to LiteLLM, whose own arguments (base_url, api_key,
# timeout, extra_headers ...) would let a client redirect a backend and its key.
_CLIENT_PARAMS = frozenset({
    "model", "stream", "stream_options", "user", "temperature", "top_p", "n", "stop",
    "max_tokens", "max_completion_tokens", "presence_penalty", "frequency_penalty",
    "logit_bias", "logprobs", "top_logprobs", "seed", "response_format", "tools",
    "tool_choice", "parallel_tool_calls", "functions", "function_call", "metadata", "store",
    "service_tier", "reasoning_effort", "modalities", "audio", "prediction", "verbosity",
    "web_search_options", "prompt_cache_key", "safety_identifier",
    "top_k", "min_p", "repetition_penalty",
})


async def _send_json(send: Send, status: int, body: bytes,
                     headers: dict[str, str] | None = None) -> None:
    raw = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def _stream(router: Router, messages: list, payload: dict[str, Any],
                  options: dict[str, Any]) -> Response:
    asked = payload.get("stream_options")
    wants_usage = isinstance(asked, dict) and bool(asked.get("include_usage"))
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


def _tags(raw: bytes) -> list[str]:
    # Header bytes are latin-1 on the wire (RFC 9110): any byte decodes, none is a 500.
    return [t.strip() for t in raw.decode("latin-1").split(",") if t.strip()]


def _failure_code(exc: AllBackendsFailed) -> str:
    if set(exc.kinds) == {"context_window"}:
        return "context_length_exceeded"
    return {429: "rate_limit_exceeded", 400: "invalid_request", 504: "timeout",
            503: "no_backend_available"}.get(exc.status, "all_backends_failed")


def check_port(host: str, port: int) -> None:
    """Raise ServiceError when host:port cannot be bound (uvicorn would log its own
    multi-line error and exit 3 instead)."""
    import socket

    if not 1 <= port <= 65535:  # the OS would wrap 99999 or pick any port for 0
        raise ServiceError(f"cannot serve on {host}:{port}: a port is 1 to 65535")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ServiceError(f"cannot serve on {host}:{port}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as exc:
            raise ServiceError(f"cannot serve on {host}:{port}: {exc.strerror} "
                               "(choose another --port)") from None


def serve(router: Router, *, host: str = "127.0.0.1", port: int = 4000,
          api_key: str | None = None) -> None:
    """Run the proxy until Ctrl-C (uvicorn, no access log: it costs throughput)."""
    import uvicorn

    try:
        check_port(host, port)
        uvicorn.run(create_proxy_app(router, api_key), host=host, port=port,
                    log_level="warning", access_log=False)
    finally:
        router.close()


__all__ = ["check_port", "create_proxy_app", "error_body", "error_response", "serve"]
