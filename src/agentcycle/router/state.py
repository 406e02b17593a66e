"""What the router remembers between requests: cooldowns, latency, spend.

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
    """Cooldowns with recovery probes, a latency moving average, spend per route per day."""

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
            return self._spend[key]

    def add_spend(self, route: str, usd: float) -> None:
        if usd <= 0:
            return
        self.spent_today(route)  # make sure the day's total was loaded first
        key = (route, utc_day())
        with self._lock:
            self._spend[key] += usd
