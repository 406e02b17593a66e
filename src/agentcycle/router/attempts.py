"""One request's walk down its plan of backends, shared by `Router.acomplete` and
streaming: which failures move on to the next backend, the attempt cap, the reason
recorded for the backend that answered, and the error when none did."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agentcycle.errors import ServiceError, first_line
from agentcycle.router import transport
from agentcycle.router.backends import Backend
from agentcycle.router.policies import RouteRequest
from agentcycle.router.state import new_request_id

if TYPE_CHECKING:
    from agentcycle.router.router import Route, Router

log = logging.getLogger("agentcycle.router.router")  # the name users already filter on


class AllBackendsFailed(ServiceError):
    """No backend of the route answered; ``errors`` lists (backend, error) in order."""

    def __init__(self, errors: list[tuple[str, str]], kinds: list[str] | None = None,
                 message: str | None = None, retry_after_s: float | None = None):
        self.errors = errors
        self.kinds = kinds or []
        self.retry_after_s = retry_after_s  # a rate limit refused it: retry after this
        detail = "; ".join(f"{name}: {err}" for name, err in errors) or "no backends configured"
        super().__init__(message or f"every model backend failed ({detail})")

    @property
    def status(self) -> int:
        """The HTTP status the proxy answers with."""
        kinds = set(self.kinds)
        if not kinds:
            return 503
        for kind, status in (("rate_limit", 429), ("context_window", 400), ("timeout", 504),
                             ("bad_request", 400)):
            if kinds == {kind}:
                return status
        return 502


@dataclass
class Attempts:
    """One request's walk down its plan of backends. `acomplete` and streaming share it,
    so their fallback rules (the attempt cap, which failures move on, the final error)
    cannot drift apart."""

    router: Router
    request: RouteRequest
    plan: list[Backend]
    reasons: list[str]
    request_id: str
    started: float
    failed: list[tuple[str, str]] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)

    @classmethod
    async def start(cls, router: Router, route: Route, request: RouteRequest) -> Attempts:
        request_id, started = new_request_id(), time.perf_counter()  # planning counts too
        plan, reasons = await router.plan(route, request)
        return cls(router, request, plan, reasons, request_id, started)

    def backends(self) -> Iterator[Backend]:
        """The plan's backends, up to the request's attempt cap."""
        for backend in self.plan:
            if self.request.max_attempts and len(self.failed) >= self.request.max_attempts:
                return
            yield backend

    async def failed_on(self, backend: Backend, exc: BaseException) -> bool:
        """Record one backend's failure; True when the next backend may be tried."""
        kind = transport.error_kind(exc)
        message = short_error(exc)
        log.warning("backend %s failed: %s", backend.name, message)
        if kind != "bad_request":  # a malformed request must not bench healthy backends
            await self.router.state.arecord_failure(backend.name)
        self.failed.append((backend.name, message))
        self.kinds.append(kind)
        return kind in self.request.fallback_on

    def reason(self, backend: Backend) -> str:
        return position_reason(self.reasons, self.failed, backend, self.request.route,
                               self.router)

    def exhausted(self, *, streamed: bool) -> AllBackendsFailed:
        """The error (recorded) for a request no backend answered."""
        message, kinds = None, self.kinds
        if not self.plan:  # the policies left nothing to try
            message = (f"no backend left for route '{self.request.route}' "
                       f"({'; '.join(self.reasons) or 'none configured'})")
            kinds = ["context_window"] if self.request.context_skipped else kinds
            if self.request.retry_after_s is not None:
                kinds = ["rate_limit"]
        error = AllBackendsFailed(self.failed, kinds, message, self.request.retry_after_s)
        self.router._record_failure(self.request_id, self.request, error, self.started,
                                    streamed=streamed)
        return error


def position_reason(reasons: list[str], failed: list, backend: Backend, route: str,
                    router: Router) -> str:
    """Why this backend: the policies' reasons, then primary or the fallback it was."""
    if failed:
        where = f"fallback after {failed[-1][0]} failed"
    else:
        first = router.routes[route].backends[0] if route in router.routes else backend
        where = "primary" if backend is first else "selected"
    return "; ".join([*reasons, where]) if reasons else where


def short_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {first_line(exc)[:200]}"
