"""Route every model call to a primary backend with ordered fallbacks."""

from agentcycle.router.backends import Backend, default_backends
from agentcycle.router.router import AllBackendsFailed, Completion, Router

__all__ = ["AllBackendsFailed", "Backend", "Completion", "Router", "default_backends"]
