"""The router's state in Redis/Valkey: one budget, one set of cooldowns, one A/B
assignment per key and one rate-limit counter for every proxy replica.

Each update is atomic on the server (a Lua script or a MULTI transaction), so replicas
never lose each other's increments:

    <prefix>cool:<backend>          the time its cooldown ends (deleted when it recovers)
    <prefix>probe:<backend>         SET NX: the one replica that probes it now
    <prefix>spend:<route>:<day>     INCRBYFLOAT, expires an hour after the UTC day ends
    <prefix>ab:<route>:<key hash>   the first arm a sticky key got (kept 30 days)
    <prefix>rl:<scope>:<window>     INCR per fixed window, expires with it
    <prefix>tb:<scope>              a token bucket (the agent app's per-key rate)

``<prefix>`` is ``agentcycle:router:<namespace>:``; the namespace is
``AGENTCYCLE_ROUTER_NAMESPACE``, else ``APP_NAME`` (set by the platform per app), else
``default``: replicas of one app share it, two apps on one Valkey do not.

Redis unreachable at start-up: the router refuses to start (one error line). Redis
lost mid-run: the router **fails open** to this replica's local state, with one warning
line, and tries Redis again every few seconds. Meanwhile the budget counts from the last
shared total plus this replica's own spend (added to Redis when it is back), and
cooldowns and rate limits are per replica: requests keep being served.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlparse

from agentcycle.errors import ConfigError, ServiceError
from agentcycle.router._redis_scripts import ADD_SPEND, CLAIM_PROBE, READ_SPEND, STICKY, TAKE
from agentcycle.router.state import RouterState, utc_day

log = logging.getLogger(__name__)
T = TypeVar("T")

AB_TTL_S = 30 * 86400
MAX_CONNECTIONS = 32  # per replica and event loop


def shown_url(url: str) -> str:
    """The URL without its password (for messages and /health)."""
    parsed = urlparse(url)
    return f"{parsed.scheme}://{parsed.hostname}:{parsed.port or 6379}{parsed.path or ''}"


def _errors() -> tuple[type[BaseException], ...]:
    from redis.exceptions import RedisError

    return (RedisError, OSError, asyncio.TimeoutError)


class RedisState(RouterState):
    """RouterState whose cooldowns, spend, sticky arms and rate counters live in Redis;
    latency averages stay per replica (each measures its own path to a backend)."""

    shared = True

    def __init__(self, url: str, *, namespace: str = "default", cooldown_s: float = 30.0,
                 load_spend: Callable[[str, str], float] | None = None,
                 timeout_s: float = 1.0, retry_s: float = 5.0, check: bool = True):
        super().__init__(cooldown_s, load_spend=load_spend)
        self.url = url
        self.namespace = namespace
        self.prefix = f"agentcycle:router:{namespace}:"
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self._clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._shared_spend: dict[tuple[str, str], float] = {}
        self._pending_spend: dict[tuple[str, str], float] = {}
        self._tasks: set[asyncio.Task] = set()
        if check:
            self.check()

    # -- connections -----------------------------------------------------------------
    def check(self) -> None:
        """Ping Redis now: ServiceError (one line) when it is unreachable."""
        import redis

        try:
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            client = redis.Redis.from_url(self.url, socket_timeout=max(self.timeout_s, 2.0),
                                          socket_connect_timeout=max(self.timeout_s, 2.0),
                                          retry=Retry(NoBackoff(), 0))
        except ValueError as exc:
            raise ConfigError(f"the router's Redis URL is invalid ({exc}); set REDIS_URL "
                              "like redis://host:6379/0") from None
        try:
            client.ping()
        except _errors() as exc:
            raise ServiceError(
                f"the router's shared state at {shown_url(self.url)} is unreachable "
                f"({type(exc).__name__}: {exc}); start Redis/Valkey, or set "
                "AGENTCYCLE_ROUTER_STATE=local for per-process state") from None
        finally:
            client.close()

    def _client(self) -> Any:
        """One client per event loop (the proxy's, the sync API's thread): redis-py's
        asyncio connections belong to the loop that opened them."""
        import redis.asyncio as aioredis

        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            # One immediate retry (a pooled connection Redis closed when it restarted),
            # not redis-py's default backoff: a request must not wait seconds for it.
            # A bounded pool; callers queue for it in _shared, so its own wait is short.
            pool = aioredis.BlockingConnectionPool.from_url(
                self.url, max_connections=MAX_CONNECTIONS, timeout=self.timeout_s,
                decode_responses=True, socket_timeout=self.timeout_s,
                socket_connect_timeout=self.timeout_s, retry=Retry(NoBackoff(), 1))
            client = aioredis.Redis(connection_pool=pool)
            client.scripts = {name: client.register_script(body) for name, body in (
                ("probe", CLAIM_PROBE), ("read_spend", READ_SPEND),
                ("add_spend", ADD_SPEND), ("sticky", STICKY), ("take", TAKE))}
            self._clients[loop] = client
            client.slots = asyncio.Semaphore(MAX_CONNECTIONS)  # see _shared
        return client

    async def _shared(self, work: Callable[[Any], Awaitable[T]],
                      fallback: Callable[[], T]) -> T:
        """``work`` on Redis; on a Redis error (or while it is down) ``fallback``."""
        if self._down_since is not None and (
                time.monotonic() < self._retry_at or not await self._came_back()):
            return fallback()
        client = self._client()
        # A burst queues here, for as long as it takes while Redis answers (CI saw 1,100
        # concurrent updates wait over 1 s for 32 connections: the pool's own wait made
        # that "Redis lost"). Redis lost while a call queued: it falls back at once,
        # instead of each queued call waiting out its own socket timeout in turn.
        async with client.slots:
            if self._down_since is not None:
                return fallback()
            try:
                return await work(client)
            except _errors() as exc:
                self._went_down(exc)
                return fallback()

    def _went_down(self, exc: BaseException) -> None:
        self._retry_at = time.monotonic() + self.retry_s
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning("router state: Redis at %s failed (%s: %s); this replica uses its "
                        "local state (budget from the last shared total, cooldowns and rate "
                        "limits per replica) and retries every %gs", shown_url(self.url),
                        type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "",
                        self.retry_s)

    async def _came_back(self) -> bool:
        """Try Redis again: add the spend made while it was away; True when it is back."""
        client, today = self._client(), utc_day()
        try:
            await client.ping()
            while self._pending_spend:
                (route, day), usd = self._pending_spend.popitem()
                seed = self.logged_before(route) if day == today else 0.0
                try:
                    await client.scripts["add_spend"](
                        keys=[self._spend_key(route, day)], args=[usd, seed, _day_end(day)])
                except BaseException:
                    self._pending_spend[(route, day)] = (
                        self._pending_spend.get((route, day), 0.0) + usd)
                    raise
        except _errors() as exc:
            self._went_down(exc)
            return False
        self._down_since = None
        log.warning("router state: Redis at %s is back; state is shared again",
                    shown_url(self.url))
        return True

    def describe(self) -> str:
        where = f"redis {shown_url(self.url)} namespace '{self.namespace}'"
        return where + (" (unreachable: local fallback)" if self._down_since else "")

    async def aclose(self) -> None:
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose(close_connection_pool=True)

    # -- keys ------------------------------------------------------------------------
    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def _spend_key(self, route: str, day: str) -> str:
        return self._key("spend", route, day)

    # -- cooldowns -------------------------------------------------------------------
    async def acooling_among(self, names: list[str]) -> set[str]:
        async def work(r: Any) -> set[str]:
            values = await r.mget([self._key("cool", n) for n in names])
            now_wall, now_mono = time.time(), time.monotonic()
            cooling = set()
            with self._lock:  # mirror it: /health, the sync view, the fallback
                for name, until in zip(names, values, strict=True):
                    if until is None:
                        self._cooling_until.pop(name, None)
                    else:
                        cooling.add(name)
                        self._cooling_until[name] = now_mono + float(until) - now_wall
            return cooling

        return await self._shared(work, lambda: {n for n in names if n in self._cooling_until})

    async def aprobe_due(self, name: str) -> bool:
        async def work(r: Any) -> bool:
            lease_ms = int(max(self.cooldown_s, 1.0) * 1000)
            return bool(await r.scripts["probe"](
                keys=[self._key("cool", name), self._key("probe", name)],
                args=[time.time(), lease_ms, self.namespace]))

        return await self._shared(work, lambda: self.probe_due(name))

    async def arecord_failure(self, name: str) -> None:
        super().record_failure(name)

        async def work(r: Any) -> None:
            keep_ms = int((self.cooldown_s + 86400) * 1000)  # no replica left: it ends
            async with r.pipeline(transaction=True) as pipe:
                pipe.set(self._key("cool", name), time.time() + self.cooldown_s, px=keep_ms)
                pipe.delete(self._key("probe", name))
                await pipe.execute()

        await self._shared(work, lambda: None)

    async def arecord_success(self, name: str) -> None:
        super().record_success(name)
        await self._shared(lambda r: r.delete(self._key("cool", name),
                                              self._key("probe", name)), lambda: None)

    def record_success(self, name: str, latency_ms: float | None = None) -> None:
        """A request answered (sync, on the loop): the latency here; a backend that was
        cooling is cleared for every replica in the background."""
        was_cooling = name in self._cooling_until
        super().record_success(name, latency_ms)
        if was_cooling:
            try:
                task = asyncio.get_running_loop().create_task(self.arecord_success(name))
            except RuntimeError:  # no loop: nothing to share from here
                return
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    # -- spend -----------------------------------------------------------------------
    async def aspent_today(self, route: str) -> float:
        day = utc_day()
        seed = self.logged_before(route)  # this replica's log: seeds an empty Redis

        async def work(r: Any) -> float:
            value = float(await r.scripts["read_spend"](
                keys=[self._spend_key(route, day)], args=[seed, _day_end(day)]))
            self._shared_spend[(route, day)] = value
            return value

        return await self._shared(work, lambda: self._fallback_spend(route, day))

    async def aadd_spend(self, route: str, usd: float) -> None:
        if usd <= 0:
            return
        day = utc_day()
        seed = self.logged_before(route)
        self.add_spend(route, usd)

        async def work(r: Any) -> None:
            value = await r.scripts["add_spend"](
                keys=[self._spend_key(route, day)], args=[usd, seed, _day_end(day)])
            self._shared_spend[(route, day)] = float(value)

        def fallback() -> None:
            key = (route, day)
            self._pending_spend[key] = self._pending_spend.get(key, 0.0) + usd

        await self._shared(work, fallback)

    def _fallback_spend(self, route: str, day: str) -> float:
        last = self._shared_spend.get((route, day))
        if last is None:
            return self.spent_today(route)
        return last + self._pending_spend.get((route, day), 0.0)

    # -- A/B and rate limits -----------------------------------------------------------
    async def asticky_arm(self, route: str, key: str, proposed: str,
                          arms: list[str]) -> str:
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]  # no user ids in Redis

        async def work(r: Any) -> str:
            return str(await r.scripts["sticky"](keys=[self._key("ab", route, digest)],
                                                 args=[proposed, AB_TTL_S, *arms]))

        return await self._shared(work, lambda: proposed)

    async def acount(self, scope: str, window_s: float) -> tuple[int, float]:
        now = time.time()
        window = int(now // window_s)

        async def work(r: Any) -> tuple[int, float]:
            key = self._key("rl", scope, str(window))
            async with r.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.pexpire(key, int(window_s * 2000))
                count, _ = await pipe.execute()
            return int(count), (window + 1) * window_s - now

        local = super().acount
        result = await self._shared(work, lambda: None)
        return result if result is not None else await local(scope, window_s)


    async def atake(self, scope: str, capacity: int, per_s: float) -> float | None:
        async def work(r: Any) -> float | None:
            taken, wait_ms = await r.scripts["take"](keys=[self._key("tb", scope)],
                                                     args=[capacity, per_s])
            return None if int(taken) else int(wait_ms) / 1000

        local = super().atake
        # None means "taken" here, so Redis being away is told apart by False
        result = await self._shared(work, lambda: False)
        return await local(scope, capacity, per_s) if result is False else result


def _day_end(day: str) -> int:
    """An hour after the UTC day ends (replicas' clocks may differ a little)."""
    import datetime as dt

    start = dt.datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=dt.UTC)
    return int(start.timestamp()) + 86400 + 3600


def uses_redis(settings: Any) -> bool:
    """Whether these settings put the router's state in Redis (see open_state)."""
    return settings.router_state == "redis" or (
        settings.router_state == "auto" and bool(settings.redis_url))


def open_state(settings: Any = None, *, cooldown_s: float = 30.0,
               load_spend: Callable[[str, str], float] | None = None) -> RouterState:
    """Redis when the settings name one, else this process's state.

    ``auto`` (the default) shares through ``REDIS_URL``/``CACHE_URL``: what the platform
    gives a deployed app, whose replicas are the point. ``VALKEY_HOST`` alone (what every
    notebook sees, one Valkey for all users) is used with ``AGENTCYCLE_ROUTER_STATE=redis``
    only: sharing budgets and cooldowns there must be chosen. ``local`` opts out."""
    if settings is None:
        from agentcycle.settings import Settings

        settings = Settings()
    url = settings.router_redis_url
    if not uses_redis(settings):
        return RouterState(cooldown_s, load_spend=load_spend)
    if not url:
        raise ConfigError("AGENTCYCLE_ROUTER_STATE=redis needs REDIS_URL, CACHE_URL or "
                          "VALKEY_HOST")
    return RedisState(url, namespace=settings.router_namespace or "default",
                      cooldown_s=cooldown_s, load_spend=load_spend)
