"""The router: a route's policies order its backends, the first that answers wins.

A backend that fails (down, timeout, 429, 5xx, context overflow) is put in cooldown so
the next request does not pay for it again; the user's request goes to the next one.
When the cooldown ends a background probe, not a user's request, checks it is back.
Every call is an LLM span carrying tokens, latency, cost, the backend and the reason
it was chosen (GenAI semantic-convention attribute names), and a row in the
accounting log (`router.db`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentcycle.errors import ConfigError, DataError, ServiceError
from agentcycle.router import transport
from agentcycle.router._litellm import import_litellm
from agentcycle.router._loop import LoopThread
from agentcycle.router._spans import llm_span, span_attributes
from agentcycle.router.accounting import RequestRecord, open_log, request_exists, spent
from agentcycle.router.attempts import Attempts, position_reason, short_error
from agentcycle.router.backends import Backend
from agentcycle.router.policies import Policy, RouteRequest, build_policies
from agentcycle.router.pricing import call_cost
from agentcycle.router.shared_state import open_state
from agentcycle.router.state import RouterState, utc_day

if TYPE_CHECKING:
    from agentcycle.router.streaming import Stream

log = logging.getLogger(__name__)

DEFAULT_ROUTE = "default"


@dataclass
class Completion:
    text: str
    backend: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    cost_usd: float
    reason: str
    failed: list[tuple[str, str]] = field(default_factory=list)
    request_id: str = ""
    route: str = DEFAULT_ROUTE
    arm: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        return (self._choice.get("message") or {}).get("tool_calls") or []

    @property
    def finish_reason(self) -> str | None:
        """``length`` when the answer was cut at max_tokens."""
        return self._choice.get("finish_reason")

    @property
    def _choice(self) -> dict[str, Any]:
        return (self.raw.get("choices") or [{}])[0]


@dataclass
class Route:
    name: str
    backends: list[Backend]
    policies: list[Policy] = field(default_factory=list)


class Router:
    """Routes over backends; ``complete``/``acomplete``/``astream`` are the calls."""

    def __init__(self, backends: list[Backend], *, cooldown_s: float = 30.0,
                 energy_usd_per_hour: float = 0.0,
                 routes: dict[str, list[str | dict[str, Any]] | Route] | None = None,
                 log_path: str | Path | None | bool = True, tracing: bool = True,
                 state: RouterState | None = None):
        if not backends:
            raise ServiceError("the router needs at least one backend")
        self.backends = list(backends)
        self.by_name = {b.name: b for b in self.backends}
        # A backend name as `model` skips the routes' policies (budgets, A/B): routers
        # built from a config allow it only where the config says so.
        self.expose_backends = True
        self.cooldown_s = cooldown_s
        self.energy_usd_per_hour = energy_usd_per_hour
        self.tracing = tracing
        # Redis/Valkey when the settings name one (replicas share it), else this process.
        self.state = state or open_state(cooldown_s=cooldown_s,
                                         load_spend=self._recorded_spend)
        self.log = open_log(log_path)
        self.routes = self._build_routes(routes)
        self._loop = LoopThread()
        self._probes: set[asyncio.Task] = set()
        import_litellm()  # pay its import (seconds) here, not inside the first call

    @classmethod
    def from_config(cls, config: Any, **overrides: Any) -> Router:
        """A router from a RouterConfig or the path of a router YAML file."""
        from agentcycle.router.config import RouterConfig, load_config

        if not isinstance(config, RouterConfig):
            config = load_config(config)
        backends = config.build_backends()
        routes = {name: Route(name, [backends[b] for b in config.route(name).backends],
                              build_policies(config.route(name).policies,
                                             config.route(name).backends))
                  for name in config.route_names()}
        options = dict(cooldown_s=config.cooldown_s, tracing=config.tracing,
                       energy_usd_per_hour=config.energy_usd_per_hour,
                       log_path=(config.db_path or True) if config.log else False)
        router = cls(list(backends.values()), routes=routes, **{**options, **overrides})
        router.expose_backends = config.expose_backends
        return router

    def _build_routes(self, routes) -> dict[str, Route]:
        built = {}
        for name, spec in (routes or {DEFAULT_ROUTE: []}).items():
            if isinstance(spec, Route):
                built[name] = spec
                continue
            # A plain list of policies applies to all backends, in the router's order.
            names = [b.name for b in self.backends]
            built[name] = Route(name, list(self.backends), build_policies(spec, names))
        return built

    # -- the public calls ----------------------------------------------------------
    def resolve(self, model: str | None) -> Route:
        """The route for a request's `model`: a route name, a backend name, or the first."""
        if not model:
            return next(iter(self.routes.values()))
        if model in self.routes:
            return self.routes[model]
        if model in self.by_name and self.expose_backends:
            return Route(model, [self.by_name[model]])
        known = ", ".join([*self.routes, *(self.by_name if self.expose_backends else [])])
        raise ConfigError(f"unknown model or route '{model}' (known: {known})")

    def run_sync(self, coroutine: Any) -> Any:
        """Run a coroutine that calls this router on the router's own loop thread (where
        its pooled connections live): how an agent's sync ``run`` drives its async code."""
        return self._loop.run(coroutine)

    def complete(self, messages: list[dict[str, Any]], **params: Any) -> Completion:
        """One chat completion from the first backend that answers (sync)."""
        return self._loop.run(self.acomplete(messages, **params))

    async def acomplete(self, messages: list[dict[str, Any]], *, route: str | None = None,
                        key: str | None = None, tags: list[str] | None = None,
                        **params: Any) -> Completion:
        """One chat completion. ``route``: a route or backend name; ``key``: the sticky
        A/B key (a user or session id); ``tags``: tags the backend must carry."""
        chosen = self.resolve(route)
        request = RouteRequest(chosen.name, messages, params, key=key, tags=tags or [])
        attempts = await Attempts.start(self, chosen, request)
        for backend in attempts.backends():
            try:
                with llm_span(backend, request.messages, self.tracing) as current:
                    raw, latency_s = await self._attempt(backend, request)
                    result = self._completion(backend, request, raw, latency_s,
                                              attempts.reasons, attempts.failed,
                                              attempts.request_id)
                    current.set_outputs({"text": result.text})
                    current.set_attributes(span_attributes(result))
            except Exception as exc:  # any failure of one backend may move on to the next
                if await attempts.failed_on(backend, exc):
                    continue
                break
            await self._record(result, request, streamed=False)
            return result
        raise attempts.exhausted(streamed=False)

    async def astream(self, messages: list[dict[str, Any]], *, route: str | None = None,
                      key: str | None = None, tags: list[str] | None = None,
                      **params: Any) -> Stream:
        """A streamed completion: falls back until a backend sends its first chunk, then
        returns a :class:`~agentcycle.router.streaming.Stream` of OpenAI chunk dicts."""
        from agentcycle.router.streaming import open_stream

        chosen = self.resolve(route)
        request = RouteRequest(chosen.name, messages, params, key=key, tags=tags or [])
        return await open_stream(self, chosen, request)

    def stream(self, messages: list[dict[str, Any]], **params: Any) -> Iterator[dict]:
        """The sync twin of astream: OpenAI chunk dicts (same fallback, same errors)."""
        from agentcycle.router.streaming import sync_chunks

        return sync_chunks(self._loop, self.astream(messages, **params))

    def record_feedback(self, request_id: str, score: float) -> None:
        """A quality score (e.g. 0..1, thumbs up = 1) for an earlier request (A/B reports)."""
        if self.log is None:
            raise DataError("feedback needs the router's accounting log (log: true)")
        if not math.isfinite(score):
            raise DataError(f"a feedback score must be a finite number, not {score}")
        self.log.flush()
        if not request_exists(self.log.path, request_id):
            raise DataError(f"unknown request id '{request_id}'")
        self.log.add_feedback(request_id, score)

    def close(self) -> None:
        """Flush the accounting log and stop the sync API's loop (and its connections)."""
        if self._loop.started:
            self._loop.run(transport.close_sessions())
            self._loop.run(self.state.aclose())
        if self.log is not None:
            self.log.flush()
        self._loop.stop()

    async def aclose(self) -> None:
        """The async twin of close(), for the running loop's connections."""
        await transport.close_sessions()
        await self.state.aclose()
        if self.log is not None:
            await asyncio.to_thread(self.log.flush)

    # -- planning and attempts -------------------------------------------------------
    async def plan(self, route: Route, request: RouteRequest) -> tuple[list[Backend], list[str]]:
        """Policies first, then the request's tags and context-window fit, then cooling
        backends to the back."""
        candidates, reasons = list(route.backends), []
        for policy in route.policies:
            candidates, why = await policy.apply(candidates, request, self.state)
            if why:
                reasons.append(why)
        if request.tags:  # the caller's tags hold on every route, with or without `tags`
            wanted = set(request.tags)
            candidates = [b for b in candidates if wanted <= set(b.tags)]
        windows = [b.context_window for b in candidates if b.context_window]
        if windows and request.max_tokens_upper_bound() > min(windows):
            needed = request.prompt_tokens() + int(request.params.get("max_tokens") or 0)
            fits = [b for b in candidates if not b.context_window or b.context_window >= needed]
            if len(fits) < len(candidates):
                request.context_skipped = True
                reasons.append(f"skipped {', '.join(b.name for b in candidates if b not in fits)}"
                               f": ~{needed} tokens exceed the context window")
            candidates = fits
        cooling_names = await self.state.acooling_among([b.name for b in candidates])
        ready = [b for b in candidates if b.name not in cooling_names]
        cooling = [b for b in candidates if b not in ready]
        for backend in cooling:
            if await self.state.aprobe_due(backend.name):
                self._start_probe(backend)
        if cooling and ready:  # else "primary" would hide that the policies' pick was moved
            reasons.append(f"{', '.join(b.name for b in cooling)} cooling down: tried last")
        # Cooling backends stay as a last resort: better a probe than a failed request.
        return ready + cooling, reasons

    async def _attempt(self, backend: Backend, request: RouteRequest) -> tuple[dict, float]:
        timeout = request.timeout_s or backend.timeout_s
        for attempt in range(backend.retries + 1):
            started = time.perf_counter()
            try:
                call = transport.complete(backend, request.messages, request.params, timeout)
                if backend.transport == "direct":  # aiohttp enforces the total timeout itself
                    raw = await call
                else:  # a hung backend never hangs the caller, whatever the SDK does
                    async with asyncio.timeout(timeout):
                        raw = await call
                return raw, time.perf_counter() - started
            except Exception as exc:
                if attempt == backend.retries or transport.error_kind(exc) in (
                        "context_window", "bad_request"):  # the same request fails again
                    raise
                await asyncio.sleep(backoff(attempt))
        raise AssertionError("unreachable")

    def _start_probe(self, backend: Backend) -> None:
        task = asyncio.get_running_loop().create_task(self._probe(backend))
        self._probes.add(task)  # a reference, so the task is not collected mid-flight
        task.add_done_callback(self._probes.discard)

    async def _probe(self, backend: Backend) -> None:
        try:
            async with asyncio.timeout(backend.timeout_s):
                await transport.complete(backend, [{"role": "user", "content": "ping"}],
                                         {"max_tokens": 1}, backend.timeout_s)
        except Exception as exc:
            log.info("probe of %s failed (%s); cooling again", backend.name, short_error(exc))
            await self.state.arecord_failure(backend.name)
        else:
            log.info("probe of %s succeeded; back in rotation", backend.name)
            await self.state.arecord_success(backend.name)

    # -- accounting ------------------------------------------------------------------
    def _completion(self, backend: Backend, request: RouteRequest, raw: dict,
                    latency_s: float, reasons: list[str], failed: list,
                    request_id: str) -> Completion:
        usage = raw.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or 0)
        choice = (raw.get("choices") or [{}])[0]
        text = (choice.get("message") or {}).get("content") or ""
        self.state.record_success(backend.name, latency_s * 1000)
        return Completion(
            text=text, backend=backend.name, model=backend.served_model,
            prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
            latency_ms=latency_s * 1000,
            cost_usd=call_cost(backend, prompt_tokens, completion_tokens, latency_s,
                               self.energy_usd_per_hour),
            reason=position_reason(reasons, failed, backend, request.route, self),
            failed=failed, request_id=request_id, route=request.route, arm=request.arm,
            raw=raw)

    async def _record(self, result: Completion, request: RouteRequest, *, streamed: bool,
                      status: str = "ok", error: str | None = None) -> None:
        await self.state.aadd_spend(result.route, result.cost_usd)
        if self.log is not None:
            self.log.add(RequestRecord(
                id=result.request_id, time=time.time(), day=utc_day(), route=result.route,
                backend=result.backend, model=result.model, reason=result.reason,
                arm=result.arm, sticky_key=request.key, prompt_tokens=result.prompt_tokens,
                completion_tokens=result.completion_tokens, cost_usd=result.cost_usd,
                latency_ms=result.latency_ms, status=status, error=error, streamed=streamed,
                attempts=len(result.failed) + 1))

    def _record_failure(self, request_id: str, request: RouteRequest, error: Exception,
                        started: float, *, streamed: bool) -> None:
        if self.log is not None:
            self.log.add(RequestRecord(
                id=request_id, time=time.time(), day=utc_day(), route=request.route,
                arm=request.arm, sticky_key=request.key, status="failed",
                latency_ms=(time.perf_counter() - started) * 1000, error=str(error)[:500],
                streamed=streamed, attempts=len(getattr(error, "errors", [])) or 1))

    def _recorded_spend(self, route: str, day: str) -> float:
        return spent(self.log.path, route, day) if self.log is not None else 0.0


def backoff(attempt: int) -> float:
    """Exponential backoff with jitter: 0.25 s, 0.5 s, 1 s ... (capped at 8 s)."""
    return min(8.0, 0.25 * 2**attempt) * (0.5 + random.random() / 2)
