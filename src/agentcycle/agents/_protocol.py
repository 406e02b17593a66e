"""The agent interface: ``run`` (sync) and ``arun`` (async), both returning an
:class:`AgentResult`. Implement one of them by subclassing :class:`BaseAgent`; the
other comes for free."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol, runtime_checkable

from agentcycle.agents._result import AgentResult


@runtime_checkable
class Agent(Protocol):
    """Anything the app, the eval targets, the pytest plugin and the demo can run."""

    kind: str

    def run(self, task: str, **options: Any) -> AgentResult: ...

    async def arun(self, task: str, **options: Any) -> AgentResult: ...


class BaseAgent:
    """Implement ``run`` or ``arun``: the other calls it (a thread for sync code, a
    private event loop for async code called from sync code)."""

    kind = "agent"

    def run(self, task: str, **options: Any) -> AgentResult:
        if type(self).arun is BaseAgent.arun:
            raise NotImplementedError(f"{type(self).__name__} implements neither run nor arun")
        if _loop_running():  # called from async code: run the coroutine in its own thread
            return _in_thread(self.arun(task, **options))
        return asyncio.run(self.arun(task, **options))

    async def arun(self, task: str, **options: Any) -> AgentResult:
        if type(self).run is BaseAgent.run:
            raise NotImplementedError(f"{type(self).__name__} implements neither run nor arun")
        return await asyncio.to_thread(self.run, task, **options)

    def close(self) -> None:
        """Release what the agent holds (connections, servers); a no-op by default."""


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _in_thread(coroutine: Any) -> AgentResult:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
