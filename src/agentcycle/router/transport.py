"""How a request reaches a backend: the LiteLLM SDK (default) or a direct HTTP post.

Both return the OpenAI wire format as plain dicts (a response, or stream chunks), so
the proxy can send them on without another pydantic round trip.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import weakref
from collections.abc import AsyncIterator
from typing import Any

import orjson

from agentcycle.errors import ConfigError
from agentcycle.router._litellm import import_litellm
from agentcycle.router.backends import Backend

Body = dict[str, Any]


class BackendError(Exception):
    """A backend answered with an error status (the direct transport's errors)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class StreamCut(Exception):
    """The backend's stream ended or broke before its last chunk."""


def error_kind(exc: BaseException) -> str:
    """One of: rate_limit, timeout, context_window, bad_request, error (the names
    fallback policies use)."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    status = getattr(exc, "status_code", None) or getattr(exc, "status", None)
    if "ContextWindowExceededError" in names or (
            status == 400 and "context" in str(exc).lower()):
        return "context_window"
    if "RateLimitError" in names or status == 429:
        return "rate_limit"
    if names & {"Timeout", "TimeoutError", "APITimeoutError", "ServerTimeoutError"}:
        return "timeout"
    if "ContentPolicyViolationError" not in names and (
            names & {"BadRequestError", "UnprocessableEntityError", "TypeError"}
            or status in (400, 422)):  # (a TypeError: arguments the SDK call refused)
        return "bad_request"  # the request's fault, not the backend's: no cooldown
    return "error"


async def complete(backend: Backend, messages: list[dict], params: Body,
                   timeout: float) -> Body:
    if backend.transport == "direct":
        return await _direct_complete(backend, messages, params, timeout)
    response = await import_litellm().acompletion(
        model=backend.model, messages=messages, api_base=backend.api_base,
        api_key=_key(backend), timeout=timeout, max_retries=0, drop_params=True, **params)
    return response.model_dump()


async def stream(backend: Backend, messages: list[dict], params: Body,
                 timeout: float) -> AsyncIterator[Body]:
    if backend.transport == "direct":
        async for chunk in _direct_stream(backend, messages, params, timeout):
            yield chunk
        return
    response = await import_litellm().acompletion(
        model=backend.model, messages=messages, api_base=backend.api_base,
        api_key=_key(backend), timeout=timeout, max_retries=0, drop_params=True,
        **_streaming(params))
    async for chunk in response:
        yield chunk.model_dump(exclude_none=True)


def _streaming(params: Body) -> Body:
    """The caller's params asking for a stream with usage (the accounting needs it),
    merged with the caller's own ``stream_options`` rather than passed twice (a
    TypeError that failed every backend of a LangChain ``stream_usage`` request)."""
    options = params.get("stream_options")
    return {**params, "stream": True, "stream_options": {
        **(options if isinstance(options, dict) else {}), "include_usage": True}}


def _key(backend: Backend) -> str | None:
    # A local OpenAI-compatible server needs no key, but the OpenAI SDK insists on one.
    return backend.api_key or ("none" if backend.api_base else None)


# -- direct: one pooled aiohttp session per event loop --------------------------------

_sessions: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _session():
    import aiohttp

    loop = asyncio.get_running_loop()
    session = _sessions.get(loop)
    if session is None or session.closed:
        _forget_stale()
        # Keep-alive connections are what make the proxy cheap: no connect per request.
        # Idle connections are dropped before the server's own keep-alive timeout
        # (uvicorn: 5 s), or a reused one may be closed under our feet.
        connector = aiohttp.TCPConnector(limit=512, ttl_dns_cache=300, keepalive_timeout=3)
        session = aiohttp.ClientSession(connector=connector, json_serialize=_dumps)
        _sessions[loop] = session
    return session


def _forget(session: Any) -> None:
    """Drop a session whose loop is gone (each ``asyncio.run`` is a new loop): its
    sockets die with the loop; this only stops aiohttp warning about it at exit."""
    with contextlib.suppress(Exception):
        connector = session.connector
        session.detach()
        if connector is not None:
            connector._close()  # sync part of close(); the loop cannot run the rest


def _forget_stale(at_exit: bool = False) -> None:
    for loop, session in list(_sessions.items()):
        if at_exit or loop.is_closed():
            _sessions.pop(loop, None)
            _forget(session)


atexit.register(_forget_stale, True)


async def close_sessions() -> None:
    """Close the running loop's direct-transport session (the proxy's shutdown)."""
    with_loop = _sessions.pop(asyncio.get_running_loop(), None)
    if with_loop is not None:
        await with_loop.close()


def _dumps(data: Any) -> str:
    return orjson.dumps(data).decode()


def _request(backend: Backend, messages: list[dict], params: Body, streaming: bool):
    if not backend.api_base:
        raise ConfigError(f"backend {backend.name} has transport: direct but no api_base")
    body = {**(_streaming(params) if streaming else params), "model": backend.served_model,
            "messages": messages}
    headers = {"content-type": "application/json"}
    if backend.api_key:
        headers["authorization"] = f"Bearer {backend.api_key}"
    url = backend.api_base.rstrip("/") + "/chat/completions"
    return url, orjson.dumps(body), headers


async def _raise_for_status(response) -> None:
    if response.status < 400:
        return
    text = await response.text()
    try:
        message = orjson.loads(text)["error"]["message"]
    except Exception:  # not the OpenAI error shape: keep the text
        message = text[:300]
    raise BackendError(response.status, message)


async def _direct_complete(backend: Backend, messages: list[dict], params: Body,
                           timeout: float) -> Body:
    import aiohttp

    url, data, headers = _request(backend, messages, params, streaming=False)
    for fresh in (False, True):
        try:
            async with _session().post(url, data=data, headers=headers,
                                       timeout=aiohttp.ClientTimeout(total=timeout)) as response:
                await _raise_for_status(response)
                return orjson.loads(await response.read())
        except aiohttp.ServerDisconnectedError:
            # A pooled keep-alive connection the server had already closed: the request
            # never reached it, so one retry (on a new connection) is safe.
            if fresh:
                raise
    raise AssertionError("unreachable")


async def _direct_stream(backend: Backend, messages: list[dict], params: Body,
                         timeout: float) -> AsyncIterator[Body]:
    import aiohttp

    url, data, headers = _request(backend, messages, params, streaming=True)
    async with _session().post(url, data=data, headers=headers,
                               timeout=aiohttp.ClientTimeout(sock_read=timeout)) as response:
        await _raise_for_status(response)
        async for line in response.content:
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                return
            chunk = orjson.loads(payload)
            if "error" in chunk:
                raise StreamCut(str(chunk["error"].get("message", chunk["error"])))
            yield chunk
    raise StreamCut("the backend closed the stream without [DONE]")
