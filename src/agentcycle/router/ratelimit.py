"""The ``rate_limit`` policy: at most N requests a minute per user/session key (the
request's ``user`` or ``x-session-id``) or per route; over it the request is refused
with a 429 and ``Retry-After`` before any backend is called.

Counted in the router's state: per process by default, shared by every proxy replica
when the state is Redis/Valkey (one INCR per request in a fixed one-minute window).
"""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import Field

from agentcycle.router.policies import Options, Policy, policy

WINDOW_S = 60.0


class RateLimitOptions(Options):
    requests_per_minute: int = Field(gt=0)
    per: Literal["key", "route"] = "key"  # key: requests without one share one bucket


@policy("rate_limit")
class RateLimit(Policy):
    """Refuse (429) a key's or a route's requests over ``requests_per_minute``."""

    Options = RateLimitOptions

    async def apply(self, candidates, request, state):
        limit = self.options.requests_per_minute
        if self.options.per == "key":
            who = hashlib.sha256(request.key.encode()).hexdigest()[:16] if request.key else "-"
            scope, whose = f"{request.route}:{who}", "this key" if request.key else "keyless"
        else:
            scope, whose = f"{request.route}:*", "this route"
        count, reset_s = await state.acount(scope, WINDOW_S)
        if count <= limit:
            return candidates, None
        request.retry_after_s = max(reset_s, 1.0)
        return [], (f"rate limit: {limit} requests a minute for {whose} "
                    f"(retry in {reset_s:.0f} s)")
