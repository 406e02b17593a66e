"""The sync API's event loop: one background thread per router runs its coroutines.

One long-lived loop (rather than ``asyncio.run`` per call) keeps LiteLLM's and aiohttp's
pooled connections alive between calls, and lets many threads share the router. The
caller's context variables travel with each call, so an LLM span still nests under
the caller's open span.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import contextvars
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    def __init__(self, name: str = "agentcycle-router"):
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def started(self) -> bool:
        return self._loop is not None

    def _start(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=loop.run_forever, name=self._name,
                                                daemon=True)
                self._thread.start()
                self._loop = loop
                atexit.register(self.stop)  # pending tasks end quietly, not destroyed
            return self._loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("the router's sync API was called from its own loop; "
                               "use the async API there")
        loop = self._start()
        context = contextvars.copy_context()
        result: concurrent.futures.Future = concurrent.futures.Future()

        def start() -> None:
            task = loop.create_task(coro, context=context)
            task.add_done_callback(lambda t: _settle(t, result))

        loop.call_soon_threadsafe(start)
        return result.result()

    def stop(self) -> None:
        """Cancel what still runs there (LiteLLM's logging worker, probes), then stop."""
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(_cancel_all(), loop).result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)


async def _cancel_all() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _settle(task: asyncio.Task, result: concurrent.futures.Future) -> None:
    if task.cancelled():
        result.cancel()
    elif task.exception() is not None:
        result.set_exception(task.exception())
    else:
        result.set_result(task.result())
