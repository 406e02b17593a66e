"""Route model calls over backends: policies (fallback, cooldown, latency, cost, budget,
tags, A/B, learned quality), accounting, an OpenAI-compatible proxy, a LiteLLM export."""

from agentcycle.router import ratelimit as _ratelimit  # noqa: F401  (registers rate_limit)
from agentcycle.router.attempts import AllBackendsFailed
from agentcycle.router.backends import Backend, default_backends
from agentcycle.router.config import RouterConfig, load_config, parse_config
from agentcycle.router.policies import POLICIES, Policy, RouteRequest, policy
from agentcycle.router.router import Completion, Route, Router
from agentcycle.router.streaming import Stream, StreamInterrupted

__all__ = [
    "POLICIES", "AllBackendsFailed", "Backend", "Completion", "Policy", "Route",
    "RouteRequest", "Router", "RouterConfig", "Stream", "StreamInterrupted",
    "default_backends", "load_config", "parse_config", "policy",
]
