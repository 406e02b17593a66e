"""The app's per-key counters and its run slots, in this process's memory.

- :class:`RateLimiter`: a token bucket per key name (``requests_per_minute``, bursting
  up to that many), answering how long to wait when empty;
- :class:`TokenBudget`: tokens spent per key name and UTC day;
- :class:`RunSlots`: at most ``max_concurrency`` agent runs at once, at most ``max_queue``
  requests waiting (each at most ``queue_timeout_s``); beyond that a request is refused
  at once with a retry time, never dropped or left hanging;
- :class:`Usage`: what ``GET /v1/stats`` reports per key name.

Several replicas each hold their own counters: divide the limits by the replica count.
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


class RateLimiter:
    """Token buckets: ``check(name)`` takes a token or returns the seconds to wait."""

    def __init__(self, policy: AppPolicy):
        self.policy = policy
        self._buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, at)
        self._lock = threading.Lock()

    def check(self, name: str, bucket: str | None = None) -> float | None:
        rpm = self.policy.rpm_for(name)
        if rpm is None:
            return None
        rate, key, now = rpm / 60.0, bucket or name, time.monotonic()
        with self._lock:
            tokens, at = self._buckets.get(key, (float(rpm), now))
            tokens = min(float(rpm), tokens + (now - at) * rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return None
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / rate


class TokenBudget:
    """Tokens used per key name today (UTC); ``check`` returns seconds to midnight when
    the day's budget is spent."""

    def __init__(self, policy: AppPolicy):
        self.policy = policy
        self._used: dict[str, int] = defaultdict(int)
        self._day = _today()
        self._lock = threading.Lock()

    def _roll(self) -> None:
        if (today := _today()) != self._day:
            self._day, self._used = today, defaultdict(int)

    def check(self, name: str) -> float | None:
        budget = self.policy.tokens_for(name)
        if budget is None:
            return None
        with self._lock:
            self._roll()
            return _to_midnight() if self._used[name] >= budget else None

    def spend(self, name: str, tokens: int) -> None:
        with self._lock:
            self._roll()
            self._used[name] += max(0, int(tokens))

    def used(self, name: str) -> int:
        with self._lock:
            self._roll()
            return self._used.get(name, 0)


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

    def report(self, budget: TokenBudget, slots: RunSlots) -> dict[str, Any]:
        with self._lock:
            keys = {name: {"requests": u.requests, "refused": dict(u.refused),
                           "tokens_today": budget.used(name)}
                    for name, u in sorted(self._keys.items())}
        return {"keys": keys, "running": slots.running, "waiting": slots.waiting}


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def _to_midnight() -> float:
    now = dt.datetime.now(dt.UTC)
    midnight = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), dt.UTC)
    return math.ceil((midnight - now).total_seconds())
