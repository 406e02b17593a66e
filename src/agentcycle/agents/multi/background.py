"""Workers in this process: a background thread with its own event loop, for the app,
notebooks and tests (``agentcycle multi worker`` runs one as its own process)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from agentcycle.agents import Agent
from agentcycle.agents.multi.protocol import QueueConfig
from agentcycle.agents.multi.worker import Worker
from agentcycle.errors import ServiceError


@contextlib.contextmanager
def run_workers(agents: Sequence[Agent], url: str, config: QueueConfig | None = None,
                names: Sequence[str] | None = None,
                **worker_options: Any) -> Iterator[list[Worker]]:
    """Serve each of ``agents`` as a worker of ``config``'s pool until the block ends."""
    names = list(names or (f"worker-{i}" for i in range(len(agents))))
    workers = [Worker(agent, config, name=name, **worker_options)
               for agent, name in zip(agents, names, strict=True)]
    loop = asyncio.new_event_loop()
    ready, failure = threading.Event(), []
    stop: asyncio.Event | None = None

    async def main() -> None:
        nonlocal stop
        from agentcycle.messaging import connect

        stop = asyncio.Event()
        try:
            nc = await connect(url, name="agentcycle-workers")
            for worker in workers:
                await worker.start(nc)
        except BaseException as exc:
            failure.append(exc)
            ready.set()
            return
        ready.set()
        try:
            await stop.wait()
        finally:
            for worker in workers:
                await worker.stop()
            with contextlib.suppress(Exception):
                await nc.drain()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),),
                              name="agentcycle-workers", daemon=True)
    thread.start()
    if not ready.wait(30):
        raise ServiceError(f"workers did not start within 30s on {url}")
    if failure:
        thread.join(5)
        raise failure[0]
    try:
        yield workers
    finally:
        loop.call_soon_threadsafe(stop.set)  # type: ignore[union-attr]
        thread.join(30)
        if not thread.is_alive():  # a worker stuck past that (a NATS restart mid-stop)
            loop.close()           # keeps its daemon thread's loop: closing it would raise
