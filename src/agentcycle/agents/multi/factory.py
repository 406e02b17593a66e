"""The agent a worker process serves: ``module:function``, ``path/to/file.py:function``
or an ``agentcycle.agents`` entry-point name, resolved by :mod:`agentcycle.plugins`."""

from __future__ import annotations

import inspect
from typing import Any

from agentcycle.agents import Agent
from agentcycle.errors import AgentcycleError, ConfigError


def load_agent(reference: str, settings: Any = None) -> Agent:
    """Build the agent ``reference`` names; a factory that takes an argument gets the
    ``settings``. Every failure is one ConfigError naming ``--agent``."""
    from agentcycle.plugins import load_agent_factory

    try:
        factory = load_agent_factory(reference)
    except ConfigError as exc:
        raise ConfigError(f"--agent {reference}: {exc}") from None
    try:
        takes_settings = bool(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        takes_settings = False
    try:
        agent = factory(settings) if takes_settings else factory()
    except AgentcycleError:
        raise
    except Exception as exc:
        raise ConfigError(f"--agent {reference}: the factory raised "
                          f"{type(exc).__name__}: {exc}") from None
    if not (callable(getattr(agent, "run", None)) or callable(getattr(agent, "arun", None))):
        raise ConfigError(f"--agent {reference}: the factory returned "
                          f"{type(agent).__name__}, not an agent (no run/arun method)")
    return agent
