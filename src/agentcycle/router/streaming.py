"""Streamed completions: fall back until a backend's first chunk, then never silently.

Before the first chunk nothing has reached the caller, so a failing backend is simply
skipped. After it, a failure cannot be hidden by switching backends (the text would
restart), so it is raised as :class:`StreamInterrupted` and logged as a failed request.
A stream that ends without a finish reason counts as cut, not as complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import TYPE_CHECKING, Any

from agentcycle.errors import ServiceError
from agentcycle.router import transport
from agentcycle.router._litellm import import_litellm
from agentcycle.router._loop import LoopThread
from agentcycle.router._spans import llm_span, span_attributes
from agentcycle.router.attempts import Attempts
from agentcycle.router.policies import RouteRequest

if TYPE_CHECKING:
    from agentcycle.router.router import Route, Router


class StreamInterrupted(ServiceError):
    """The backend failed after the stream had started."""


class Stream:
    """An async iterator of OpenAI chat-completion chunk dicts, plus what the router chose.

    ``backend``, ``request_id``, ``reason`` and ``arm`` are known before the first chunk
    is read, so a proxy can put them in its response headers.
    """

    def __init__(self, router: Router, backend: Any, request: RouteRequest, request_id: str,
                 reason: str, failed: list, chunks: AsyncIterator[dict], first: dict,
                 started: float, timeout: float):
        self.router, self.backend, self.request = router, backend, request
        self.request_id, self.reason, self.failed = request_id, reason, failed
        self.arm = request.arm
        self._chunks, self._first = chunks, first
        self._started, self._timeout = started, timeout
        self.text_parts: list[str] = []
        self.usage: dict[str, Any] = {}
        self.finish_reason: str | None = None

    def _observe(self, chunk: dict) -> None:
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            if delta.get("content"):
                self.text_parts.append(delta["content"])
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]

    async def __aiter__(self) -> AsyncIterator[dict]:
        status, error = "cancelled", "the client stopped reading"
        try:
            self._observe(self._first)
            yield self._first
            while True:
                try:
                    async with asyncio.timeout(self._timeout):
                        chunk = await anext(self._chunks)
                except StopAsyncIteration:
                    break
                self._observe(chunk)
                yield chunk
            if self.finish_reason is None:
                raise transport.StreamCut("the stream ended before a finish reason")
            status, error = "ok", None
        except Exception as exc:  # (a client going away is not an Exception: logged as such)
            status = "failed"
            error = f"stream interrupted after {len(self.text_parts)} chunks: " \
                    f"{type(exc).__name__}: {exc}"
            raise StreamInterrupted(f"backend {self.backend.name}: {error}") from exc
        finally:
            await self._finish(status, error)

    async def _finish(self, status: str, error: str | None) -> None:
        with_close = getattr(self._chunks, "aclose", None)
        if with_close is not None:
            with contextlib.suppress(Exception):  # closing a broken connection may fail too
                await with_close()
        latency_s = time.perf_counter() - self._started
        text = "".join(self.text_parts)
        prompt = int(self.usage.get("prompt_tokens") or 0) or self.request.prompt_tokens()
        completion = int(self.usage.get("completion_tokens") or 0)
        if not completion and text:  # a backend that sends no usage: count it ourselves
            completion = int(import_litellm().token_counter(text=text))
        result = self.router._completion(
            self.backend, self.request, {"usage": {"prompt_tokens": prompt,
                                                   "completion_tokens": completion}},
            latency_s, [], self.failed, self.request_id)
        result.text, result.reason = text, self.reason
        if status == "failed":
            await self.router.state.arecord_failure(self.backend.name)
        if self.router.tracing:
            # Recorded once the stream is over: a span cannot stay open across the yields
            # of a generator the caller drives (its context would leak into theirs).
            with llm_span(self.backend, self.request.messages, True) as span:
                span.set_outputs({"text": text})
                span.set_attributes({**span_attributes(result), "agentcycle.streamed": True,
                                     "agentcycle.status": status})
        await self.router._record(result, self.request, streamed=True, status=status,
                                  error=error)

    async def text(self) -> str:
        """Read the whole stream; the text."""
        async for _ in self:
            pass
        return "".join(self.text_parts)


async def open_stream(router: Router, route: Route, request: RouteRequest) -> Stream:
    attempts = await Attempts.start(router, route, request)
    for backend in attempts.backends():
        timeout = request.timeout_s or backend.timeout_s
        chunks = transport.stream(backend, request.messages, request.params, timeout)
        try:
            async with asyncio.timeout(timeout):
                first = await anext(chunks)
        except Exception as exc:  # nothing sent yet: the next backend may still answer
            if isinstance(exc, StopAsyncIteration):
                exc = transport.StreamCut("the backend sent an empty stream")
            may_fall_back = await attempts.failed_on(backend, exc)
            await chunks.aclose()
            if may_fall_back:
                continue
            break
        return Stream(router, backend, request, attempts.request_id, attempts.reason(backend),
                      attempts.failed, chunks, first, attempts.started, timeout)
    raise attempts.exhausted(streamed=True)


def sync_chunks(loop: LoopThread, opening: Coroutine[Any, Any, Stream]) -> Iterator[dict]:
    """Drive a Stream from sync code, one chunk at a time on the router's loop thread."""
    chunks = loop.run(opening).__aiter__()

    async def step() -> tuple[bool, dict | None]:
        try:
            return True, await anext(chunks)
        except StopAsyncIteration:
            return False, None

    try:
        while True:
            more, chunk = loop.run(step())
            if not more:
                return
            yield chunk  # type: ignore[misc]
    finally:  # a caller that stops early still closes the backend's stream (and logs it)
        loop.run(chunks.aclose())
