"""What the router remembers between requests: cooldowns, latency, spend, sticky A/B
arms, rate-limit counters and token buckets (the agent app's per-key limits use them too).

One interface, two backends. :class:`RouterState` (here) keeps it in this process, with
the day's spend read back from the SQLite log after a restart: the embedded default.
:class:`~agentcycle.router.shared_state.RedisState` keeps it in Redis/Valkey so proxy
replicas behind one Service share one budget, one set of cooldowns, one A/B assignment
per key and one rate-limit counter. The router calls the async methods (``a*``); the sync
ones read this process's view (tests, /health, custom policies written before).

Read and written by the event loop that serves requests and by the sync API's loop
thread, so every update is a few dict operations under one threading lock: never held
across an ``await``, so asyncio tasks cannot interleave inside an update either.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import threading
import time
from collections.abc import Callable

_day_cache: tuple[int, str] = (-1, "")
_ids = itertools.count(1)
_ID_PREFIX = f"req-{os.urandom(6).hex()}-"


def utc_day() -> str:
    """Today (UTC) as YYYY-MM-DD; formatted once a day, not per request."""
    global _day_cache
    number = int(time.time() // 86400)
    if _day_cache[0] != number:
        _day_cache = (number, dt.datetime.fromtimestamp(number * 86400, dt.UTC)
                      .strftime("%Y-%m-%d"))
    return _day_cache[1]


def new_request_id() -> str:
    """Unique across processes (a random prefix per process) without a syscall per call."""
    return f"{_ID_PREFIX}{next(_ids):x}"


class RouterState:
    """Cooldowns with recovery probes, a latency moving average, spend per route per day,
    rate-limit windows: in this process (the embedded default)."""

    shared: bool = False  # True where replicas share it (RedisState)

    def __init__(self, cooldown_s: float = 30.0, latency_alpha: float = 0.2,
                 load_spend: Callable[[str, str], float] | None = None):
        self.cooldown_s = cooldown_s
        self.latency_alpha = latency_alpha
        self._load_spend = load_spend
        self._lock = threading.Lock()
        self._cooling_until: dict[str, float] = {}
        self._probing: set[str] = set()
        self.latency_ms: dict[str, float] = {}
        self._spend: dict[tuple[str, str], float] = {}
        self._counts: dict[tuple[str, int], int] = {}
        self._buckets: dict[str, tuple[float, float]] = {}  # scope -> (tokens, at)
        self._loaded: dict[tuple[str, str], float] = {}  # what earlier runs had logged

    # -- cooldown ------------------------------------------------------------------
    def is_ready(self, name: str) -> bool:
        return name not in self._cooling_until

    def probe_due(self, name: str) -> bool:
        """True once per expired cooldown: the caller owns the single recovery probe."""
        with self._lock:
            until = self._cooling_until.get(name)
            if until is None or until > time.monotonic() or name in self._probing:
                return False
            self._probing.add(name)
            return True

    def record_failure(self, name: str) -> None:
        with self._lock:
            self._cooling_until[name] = time.monotonic() + self.cooldown_s
            self._probing.discard(name)

    def record_success(self, name: str, latency_ms: float | None = None) -> None:
        with self._lock:
            self._cooling_until.pop(name, None)
            self._probing.discard(name)
            if latency_ms is not None:
                old = self.latency_ms.get(name)
                self.latency_ms[name] = latency_ms if old is None else (
                    self.latency_alpha * latency_ms + (1 - self.latency_alpha) * old)

    def cooling(self) -> list[str]:
        return list(self._cooling_until)

    # -- spend ---------------------------------------------------------------------
    def spent_today(self, route: str) -> float:
        key = (route, utc_day())
        with self._lock:
            if key not in self._spend:
                # First look this day: start from what earlier runs recorded (budgets
                # survive a restart).
                self._spend[key] = self._load_spend(*key) if self._load_spend else 0.0
                self._loaded[key] = self._spend[key]
            return self._spend[key]

    def logged_before(self, route: str) -> float:
        """What earlier runs had recorded today for this route (read once a day)."""
        self.spent_today(route)
        return self._loaded[(route, utc_day())]

    def add_spend(self, route: str, usd: float) -> None:
        if usd <= 0:
            return
        self.spent_today(route)  # make sure the day's total was loaded first
        key = (route, utc_day())
        with self._lock:
            self._spend[key] += usd

    # -- the async interface the router calls (RedisState overrides it) ----------------
    def describe(self) -> str:
        """Where the state lives, for /health and the serve banner."""
        return "local (this process)"

    async def acooling_among(self, names: list[str]) -> set[str]:
        """Which of these backends are cooling down."""
        return {name for name in names if name in self._cooling_until}

    async def aprobe_due(self, name: str) -> bool:
        return self.probe_due(name)

    async def arecord_failure(self, name: str) -> None:
        self.record_failure(name)

    async def arecord_success(self, name: str) -> None:
        """A probe (or a request) found the backend healthy: out of cooldown."""
        self.record_success(name)

    async def aspent_today(self, route: str) -> float:
        return self.spent_today(route)

    async def aadd_spend(self, route: str, usd: float) -> None:
        self.add_spend(route, usd)

    async def asticky_arm(self, route: str, key: str, proposed: str,
                          arms: list[str]) -> str:
        """The arm a sticky key keeps: here the policy's hash is the memory (no storage,
        survives restarts); a shared state stores the first assignment."""
        return proposed

    async def acount(self, scope: str, window_s: float) -> tuple[int, float]:
        """Count one request in ``scope``'s current fixed window: (requests in the
        window so far, including this one; seconds until the window ends)."""
        now = time.time()
        window = int(now // window_s)
        with self._lock:
            if len(self._counts) > 10_000:  # drop finished windows
                self._counts = {k: v for k, v in self._counts.items() if k[1] >= window}
            count = self._counts.get((scope, window), 0) + 1
            self._counts[(scope, window)] = count
        return count, (window + 1) * window_s - now

    async def atake(self, scope: str, capacity: int, per_s: float) -> float | None:
        """Take one token from ``scope``'s bucket (``capacity`` tokens, refilled at
        ``per_s`` a second): None when taken, else the seconds until one is there."""
        now = time.monotonic()
        with self._lock:
            tokens, at = self._buckets.get(scope, (float(capacity), now))
            tokens = min(float(capacity), tokens + (now - at) * per_s)
            taken = tokens >= 1.0
            self._buckets[scope] = (tokens - 1.0 if taken else tokens, now)
        return None if taken else (1.0 - tokens) / per_s

    async def aclose(self) -> None:
        """Release connections (none here)."""
