"""Route model calls over backends: policies (fallback, cooldown, latency, cost, budget,
tags, A/B, learned quality), accounting, an OpenAI-compatible proxy, a LiteLLM export."""

from agentcycle.router.attempts import AllBackendsFailed
from agentcycle.router.backends import Backend, default_backends
from agentcycle.router.config import RouterConfig, load_config, parse_config
from agentcycle.router.policies import POLICIES, Policy, RouteRequest, policy
from agentcycle.router.ratelimit import RateLimit  # registers the rate_limit policy
from agentcycle.router.router import Completion, Route, Router
from agentcycle.router.streaming import Stream, StreamInterrupted

__all__ = [
    "POLICIES", "AllBackendsFailed", "Backend", "Completion", "Policy", "RateLimit", "Route",
    "RouteRequest", "Router", "RouterConfig", "Stream", "StreamInterrupted",
    "default_backends", "load_config", "parse_config", "policy",
]
