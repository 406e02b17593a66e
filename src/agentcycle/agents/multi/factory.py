"""Resolve ``module:function`` (or ``path/to/file.py:function``) to an agent factory and
build the agent a worker process serves."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any

from agentcycle.agents import Agent
from agentcycle.errors import AgentcycleError, ConfigError


def load_agent(reference: str, settings: Any = None) -> Agent:
    """Call the factory ``reference`` names (with ``settings`` if it takes an argument)."""
    factory = _resolve(reference)
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


def _resolve(reference: str) -> Any:
    module_name, _, attribute = reference.rpartition(":")
    if not module_name or not attribute:
        raise ConfigError(f"--agent {reference!r}: expected module:function "
                          "(e.g. mypackage.agents:make_agent or agents.py:make_agent)")
    module = _import(module_name, reference)
    factory = getattr(module, attribute, None)
    if factory is None:
        raise ConfigError(f"--agent {reference}: {module_name} has no attribute {attribute!r}")
    if not callable(factory):
        raise ConfigError(f"--agent {reference}: {attribute} is not callable")
    return factory


def _import(module_name: str, reference: str) -> Any:
    if module_name.endswith(".py"):
        path = Path(module_name).expanduser().resolve()
        if not path.is_file():
            raise ConfigError(f"--agent {reference}: no file {path}")
        spec = importlib.util.spec_from_file_location(f"agentcycle_worker_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[spec.name] = module  # type: ignore[union-attr]
        try:
            spec.loader.exec_module(module)  # type: ignore[union-attr]
        except Exception as exc:
            raise ConfigError(f"--agent {reference}: importing {path} failed: "
                              f"{type(exc).__name__}: {exc}") from None
        return module
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"--agent {reference}: cannot import {module_name!r}: {exc}") from None
