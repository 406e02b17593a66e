"""The app's per-key limits and its run slots.

- :class:`RateLimiter`: a token bucket per key name (``requests_per_minute``, bursting
  up to that many), answering how long to wait when empty;
- :class:`TokenBudget`: tokens spent per key name and UTC day;
- :class:`RunSlots`: at most ``max_concurrency`` agent runs at once, at most ``max_queue``
  requests waiting (each at most ``queue_timeout_s``); beyond that a request is refused
  at once with a retry time, never dropped or left hanging;
- :class:`Usage`: what ``GET /v1/stats`` reports per key name.

The rate and the token budget live in the router's state (:mod:`agentcycle.router.state`):
this process's by default, Redis/Valkey when ``REDIS_URL`` is set, so every replica of
the app counts against one limit per key (and fails open to its own counters while
Redis is away). Run slots, and the request counts of ``/v1/stats``, are per replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import threading
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from agentcycle.app.policy import AppPolicy
from agentcycle.router.state import RouterState


class RateLimiter:
    """A token bucket per key name: ``requests_per_minute``, bursting up to that many."""

    def __init__(self, policy: AppPolicy, state: RouterState):
        self.policy = policy
        self.state = state

    async def check(self, name: str, bucket: str | None = None) -> float | None:
        """Take a token: None, or the seconds to wait for one."""
        rpm = self.policy.rpm_for(name)
        if rpm is None:
            return None
        return await self.state.atake(f"app:{bucket or name}", rpm, rpm / 60.0)


class TokenBudget:
    """Tokens used per key name today (UTC), in the router state's daily counter (the
    one its budgets count dollars in, here counting tokens under an ``app-tokens:``
    name); ``check`` returns seconds to midnight when the day's budget is spent."""

    def __init__(self, policy: AppPolicy, state: RouterState):
        self.policy = policy
        self.state = state

    async def check(self, name: str) -> float | None:
        budget = self.policy.tokens_for(name)
        if budget is None:
            return None
        return _to_midnight() if await self.used(name) >= budget else None

    async def spend(self, name: str, tokens: int) -> None:
        await self.state.aadd_spend(f"app-tokens:{name}", max(0, int(tokens)))

    async def used(self, name: str) -> int:
        return int(await self.state.aspent_today(f"app-tokens:{name}"))


class Overloaded(Exception):
    def __init__(self, retry_after_s: float, reason: str):
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class RunSlots:
    """A bounded queue in front of a semaphore, on the server's event loop."""

    def __init__(self, policy: AppPolicy):
        self.policy = policy
        self.running = 0
        self.waiting = 0
        self._semaphore: asyncio.Semaphore | None = None
        self._recent_s = 1.0  # a moving average of a run's duration: the retry hint

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Wait for a run slot (bounded), or raise :class:`Overloaded` with a retry time."""
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.policy.max_concurrency)
        if self._semaphore.locked() and self.waiting >= self.policy.max_queue:
            raise Overloaded(self._retry_after(), f"the app is at capacity "
                             f"({self.running} running, {self.waiting} waiting)")
        self.waiting += 1
        try:
            await asyncio.wait_for(self._semaphore.acquire(), self.policy.queue_timeout_s)
        except TimeoutError:
            raise Overloaded(self._retry_after(), "no run slot came free within "
                             f"{self.policy.queue_timeout_s:g} s") from None
        finally:
            self.waiting -= 1
        self.running += 1
        started = time.monotonic()
        try:
            yield
        finally:
            self._recent_s = 0.8 * self._recent_s + 0.2 * (time.monotonic() - started)
            self.running -= 1
            self._semaphore.release()

    def _retry_after(self) -> float:
        queued = self.waiting + self.running
        return max(1.0, self._recent_s * queued / self.policy.max_concurrency)


@dataclass
class KeyUsage:
    requests: int = 0
    refused: Counter = field(default_factory=Counter)
    tokens_today: int = 0


class Usage:
    """Requests answered and refused per key name (refusals by status)."""

    def __init__(self) -> None:
        self._keys: dict[str, KeyUsage] = defaultdict(KeyUsage)
        self._lock = threading.Lock()

    def answered(self, name: str) -> None:
        with self._lock:
            self._keys[name].requests += 1

    def refused(self, name: str, status: int) -> None:
        with self._lock:
            self._keys[name].refused[str(status)] += 1

    async def report(self, budget: TokenBudget, slots: RunSlots) -> dict[str, Any]:
        with self._lock:
            keys = {name: {"requests": u.requests, "refused": dict(u.refused)}
                    for name, u in sorted(self._keys.items())}
        for name, counts in keys.items():
            counts["tokens_today"] = await budget.used(name)
        return {"keys": keys, "running": slots.running, "waiting": slots.waiting,
                "state": budget.state.describe()}


def _to_midnight() -> float:
    now = dt.datetime.now(dt.UTC)
    midnight = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), dt.UTC)
    return math.ceil((midnight - now).total_seconds())
