"""The one home for what every server we run (the agent app, the router proxy, the
model server's gate, the adapter engine) answers to bad requests: OpenAI's error object
(``{"error": {"message", "type", "code", "param"}}``), the JSON answer to a wrong path
or method, and reading a request body with a size bound and a deadline (a client that
trickles bytes must not hold a connection, a run slot or memory forever)."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive

MAX_BODY_BYTES = 16 * 1024 * 1024  # an OpenAI chat request: a long context, some images
BODY_TIMEOUT_S = 30.0

_TYPES = {400: "invalid_request_error", 401: "authentication_error",
          403: "permission_error", 404: "invalid_request_error",
          405: "invalid_request_error", 408: "invalid_request_error",
          413: "invalid_request_error", 415: "invalid_request_error",
          422: "invalid_request_error", 429: "rate_limit_error",
          503: "service_unavailable"}
_CODES = {404: "not_found", 405: "method_not_allowed", 408: "request_timeout",
          413: "request_too_large"}


def openai_error(status: int, message: str, code: str | int | None = None,
                 kind: str | None = None) -> dict[str, Any]:
    """OpenAI's error object for ``status``; ``code`` defaults to a name for the status."""
    return {"error": {"message": message, "type": kind or _TYPES.get(status, "api_error"),
                      "code": code if code is not None else _CODES.get(status, status),
                      "param": None}}


def openai_error_bytes(status: int, message: str, code: str | int | None = None,
                       kind: str | None = None) -> bytes:
    return orjson.dumps(openai_error(status, message, code, kind))


def openai_error_response(status: int, message: str, code: str | int | None = None,
                          kind: str | None = None,
                          headers: dict[str, str] | None = None) -> Response:
    return Response(openai_error_bytes(status, message, code, kind), status,
                    headers=headers, media_type="application/json")


async def http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (plain text by default) as OpenAI errors."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    message = {404: f"no such endpoint: {request.url.path}",
               405: f"{request.method} is not allowed on {request.url.path}"}.get(
        status, str(getattr(exc, "detail", "")) or "the request failed")
    headers = dict(getattr(exc, "headers", None) or {})
    return openai_error_response(status, message, headers=headers or None)


EXCEPTION_HANDLERS: dict[Any, Any] = {HTTPException: http_exception}


class BodyRefused(Exception):
    """The body was too large (413) or too slow to arrive (408)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status

    def response(self) -> Response:
        return openai_error_response(self.status, str(self))


def too_large_message(limit: int) -> str:
    return f"the request body is larger than {limit} bytes: send a shorter one"


def timeout_message(timeout_s: float) -> str:
    return f"the request body did not arrive within {timeout_s:g} s: send it at once"


def declared_size(value: str | bytes | None) -> int:
    """The ``Content-Length`` a client declared (0 when absent or unreadable)."""
    try:
        return max(0, int(value or 0))
    except ValueError:
        return 0


async def read_body(receive: Receive, limit: int = MAX_BODY_BYTES,
                    timeout_s: float = BODY_TIMEOUT_S) -> bytes:
    """The whole body, or :class:`BodyRefused`: past ``limit`` bytes (a 413, however
    the body is sent) or not all there within ``timeout_s`` (a 408). A client that
    disconnects gives what arrived."""
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                message: Message = await receive()
                if message["type"] != "http.request":
                    break
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise BodyRefused(413, too_large_message(limit))
                chunks.append(chunk)
                if not message.get("more_body"):
                    break
    except TimeoutError:
        raise BodyRefused(408, timeout_message(timeout_s)) from None
    return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app the body already read, then the real channel
    (so the app still learns of a disconnect)."""
    sent = False

    async def receive_again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return receive_again


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def lone_surrogate(body: bytes) -> bool:
    """Whether a JSON body holds a ``\\udXXX`` escape that is not half of a pair:
    Python's ``json`` accepts it, and the answer that echoes it cannot be encoded."""
    if not _SURROGATE_ESCAPE.search(body):
        return False
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        return False  # not JSON at all: the endpoint's own parser says so
    try:
        json.dumps(parsed, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    except (ValueError, RecursionError):
        return False
    return False


def loads(body: bytes) -> Any:
    """JSON from a request body, or ValueError for anything that is not (invalid
    UTF-8, nesting too deep for the parser, NaN ...): never another exception."""
    try:
        return orjson.loads(body)
    except (orjson.JSONDecodeError, RecursionError, UnicodeDecodeError) as exc:
        raise ValueError(str(exc)) from None
