"""The agent a worker process serves: ``module:function``, ``path/to/file.py:function``
or an ``agentcycle.agents`` entry-point name, resolved by :mod:`agentcycle.plugins`."""

from __future__ import annotations

import inspect
from typing import Any

from agentcycle.agents import Agent
from agentcycle.errors import AgentcycleError, ConfigError


def load_agent(reference: str, settings: Any = None, options: Any = None, *,
               label: str = "--agent") -> Agent:
    """Build the agent ``reference`` names. The factory gets as many of
    ``(settings, options)`` as it takes: the documented ``make(settings, options)``,
    ``make(settings)``, ``make()`` or an Agent class all work. Every failure is one
    ConfigError naming ``label`` (``--agent``) and the reference."""
    from agentcycle.plugins import load_agent_factory

    where = f"{label} {reference}" if label else f"agent '{reference}'"
    try:
        factory = load_agent_factory(reference)
    except ConfigError as exc:
        raise (ConfigError(f"{where}: {exc}") if label else exc) from None
    try:
        agent = factory(*(settings, options)[:_positional(factory)])
    except AgentcycleError:
        raise
    except Exception as exc:
        raise ConfigError(f"{where}: the factory raised "
                          f"{type(exc).__name__}: {exc}") from None
    if not (callable(getattr(agent, "run", None)) or callable(getattr(agent, "arun", None))):
        raise ConfigError(f"{where}: the factory returned "
                          f"{type(agent).__name__}, not an agent (no run/arun method)")
    return agent


def _positional(factory: Any) -> int:
    """How many positional arguments, up to two, ``factory`` accepts."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return 0
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters):
        return 2
    return min(2, sum(p.kind in kinds for p in parameters))
