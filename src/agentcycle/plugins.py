"""User extensions: tools, agents, scorers and routing policies from outside agentcycle.

Two ways to name one, both resolved when a config is loaded (never at import of
agentcycle, so an installed plugin cannot slow down or break ``import agentcycle``):

- an **entry point** of an installed distribution, by its name, in one of the groups
  ``agentcycle.tools``, ``agentcycle.agents``, ``agentcycle.scorers``,
  ``agentcycle.policies``::

      [project.entry-points."agentcycle.policies"]
      prefer_cloud = "my_pkg.routing:PreferCloud"

- a **reference** ``package.module:attribute`` or ``path/to/file.py:attribute`` (a
  relative path is taken from ``base_dir``: the folder of the config that names it).

Every failure (no such module or file, no such attribute, the import raised) is one
ConfigError line naming the reference.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from agentcycle.errors import AgentcycleError, ConfigError

if TYPE_CHECKING:
    from agentcycle.agents import Agent, Tool

TOOLS = "agentcycle.tools"
AGENTS = "agentcycle.agents"
SCORERS = "agentcycle.scorers"
POLICIES = "agentcycle.policies"
GROUPS = (TOOLS, AGENTS, SCORERS, POLICIES)


def is_reference(text: str) -> bool:
    """True for 'module:attr' or 'file.py:attr' (a plain name is a registry or entry point)."""
    return ":" in text


def load_object(ref: str, base_dir: str | Path | None = None, *, kind: str = "attribute") -> Any:
    """'package.module:attr' or 'path/to/file.py:attr' (``attr`` may be dotted) -> the object.

    A relative file is looked for in ``base_dir`` first, then the working directory;
    ``kind`` ("function", "class") only words the error for a missing attribute."""
    module_ref, _, attr = ref.strip().rpartition(":")
    if not module_ref or not attr:
        raise ConfigError(f"bad reference '{ref}': write package.module:name or "
                          "path/to/file.py:name")
    module = _load_file(ref, module_ref, base_dir) if module_ref.endswith(".py") else (
        _import(ref, module_ref, base_dir))
    found: Any = module
    for part in attr.split("."):
        if not hasattr(found, part):
            # What it has, less imported modules and `from __future__ import annotations`.
            public = sorted(n for n, v in vars(module).items() if not n.startswith("_") and
                            not isinstance(v, ModuleType) and type(v).__name__ != "_Feature")
            public = public[:12]
            raise ConfigError(f"'{module_ref}' has no {kind} '{attr}'"
                              + (f" (it has: {', '.join(public)})" if public else ""))
        found = getattr(found, part)
    return found


def _import(ref: str, module_ref: str, base_dir: str | Path | None) -> ModuleType:
    try:
        return importlib.import_module(module_ref)
    except ModuleNotFoundError as exc:
        hint = ""
        if exc.name == module_ref.split(".")[0] and base_dir is not None and (
                Path(base_dir) / f"{module_ref.replace('.', '/')}.py").is_file():
            hint = f" (for the file beside the config, write {module_ref}.py:{ref.split(':')[-1]})"
        if exc.name and (module_ref == exc.name or module_ref.startswith(exc.name + ".")):
            raise ConfigError(f"cannot import '{module_ref}' (for '{ref}'): no module named "
                              f"'{exc.name}'{hint}") from None
        raise ConfigError(f"cannot import '{module_ref}' (for '{ref}'): {exc}") from None
    except Exception as exc:  # the user's module raised while importing: say where
        raise ConfigError(f"cannot import '{module_ref}' (for '{ref}'): it raised "
                          f"{_where(exc)}") from None


def _load_file(ref: str, file_ref: str, base_dir: str | Path | None) -> ModuleType:
    path = Path(file_ref).expanduser()
    if not path.is_absolute() and base_dir is not None and (Path(base_dir) / path).is_file():
        path = Path(base_dir) / path
    path = path.resolve()
    if not path.is_file():
        raise ConfigError(f"cannot load '{ref}': no file {path}")
    stat = path.stat()
    stamp = (stat.st_mtime_ns, stat.st_size)
    name = _module_name(path)
    loaded = sys.modules.get(name)
    if loaded is not None and getattr(loaded, "__agentcycle_stamp__", None) == stamp:
        return loaded  # the config check and the router built from it share its classes
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot load '{ref}': {path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    module.__agentcycle_stamp__ = stamp  # type: ignore[attr-defined]
    sys.modules[name] = module  # before running it: dataclasses and pydantic look it up
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise ConfigError(f"cannot load '{ref}': running {path.name} raised "
                          f"{_where(exc, path)}") from None
    return module


def _module_name(path: Path) -> str:
    """The file's stem (results and caches name 'my_agent.ask'), unless a module of that
    name from elsewhere is loaded (a user's 'policies.py' must not replace ours)."""
    other = sys.modules.get(path.stem)
    if other is None or getattr(other, "__file__", None) == str(path):
        return path.stem
    return f"{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"


def _where(exc: BaseException, path: Path | None = None) -> str:
    """'ValueError: boom (at plugin.py:3)': the error and the user's line that raised it
    (the loaded file's own line when a library it called raised)."""
    if isinstance(exc, SyntaxError):
        return f"SyntaxError: {exc.msg} (at {Path(exc.filename or '?').name}:{exc.lineno})"
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if "importlib" not in f.filename and f.filename != __file__]
    own = [f for f in frames if path is not None and f.filename == str(path)]
    frame = (own or frames or [None])[-1]
    at = f" (at {Path(frame.filename).name}:{frame.lineno})" if frame else ""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}{at}"  # one line, always


def _entry_points(group: str) -> dict[str, importlib.metadata.EntryPoint]:
    """Name -> entry point, read from the installed distributions now (first one wins)."""
    found: dict[str, importlib.metadata.EntryPoint] = {}
    for entry in importlib.metadata.entry_points(group=group):
        found.setdefault(entry.name, entry)
    return found


def entry_point_names(group: str) -> list[str]:
    """The names installed distributions declare in ``group``, without importing them."""
    return sorted(_entry_points(group))


def entry_point_object(group: str, name: str) -> Any | None:
    """The object of entry point ``name`` in ``group``; None when no distribution has it."""
    entry = _entry_points(group).get(name)
    if entry is None:
        return None
    dist = getattr(entry.dist, "name", None)
    try:
        return load_object(entry.value.split("[")[0].strip())  # drop old-style [extras]
    except ConfigError as exc:
        origin = f" of {dist}" if dist else ""
        raise ConfigError(f"entry point '{name}' in {group}{origin}: {exc}") from None


def entry_point_objects(group: str) -> dict[str, Any]:
    """Every entry point of ``group``, loaded: name -> object."""
    return {name: entry_point_object(group, name) for name in entry_point_names(group)}


def load_plugin(group: str, ref: str, base_dir: str | Path | None = None, *,
                what: str = "plugin") -> Any:
    """A reference ('module:attr', 'file.py:attr') or an entry-point name in ``group``."""
    if is_reference(ref):
        return load_object(ref, base_dir)
    found = entry_point_object(group, ref)
    if found is None:
        names = entry_point_names(group)
        known = f"installed: {', '.join(names)}" if names else f"none installed in {group}"
        raise ConfigError(f"unknown {what} '{ref}' ({known}; or write module:name or "
                          "file.py:name)")
    return found


def load_tool(ref: str, base_dir: str | Path | None = None) -> Tool:
    """A tool by entry-point name (``agentcycle.tools``) or reference: a typed function,
    a :class:`~agentcycle.agents.Tool` or a LangChain tool."""
    from agentcycle.agents.tools import Tool

    found = load_plugin(TOOLS, ref, base_dir, what="tool")
    try:
        return Tool.from_function(found)
    except ConfigError as exc:
        raise ConfigError(f"tool '{ref}': {exc}") from None


def load_agent_factory(ref: str, base_dir: str | Path | None = None) -> Callable[..., Agent]:
    """An agent by entry-point name (``agentcycle.agents``) or reference: a class or a
    function that builds an Agent (called with the options the caller has), or an
    Agent instance (returned as is by the factory)."""
    from agentcycle.agents import Agent

    found = load_plugin(AGENTS, ref, base_dir, what="agent")
    if isinstance(found, Agent) and not isinstance(found, type):
        return lambda *args, **options: found
    if callable(found):
        return found
    raise ConfigError(f"agent '{ref}' is a {type(found).__name__}: give an Agent class, a "
                      "function returning an Agent, or an Agent instance")


def load_agent(reference: str, settings: Any = None, options: Any = None, *,
               label: str = "--agent") -> Agent:
    """Build the agent ``reference`` names. The factory gets as many of
    ``(settings, options)`` as it takes: the documented ``make(settings, options)``,
    ``make(settings)``, ``make()`` or an Agent class all work. Every failure is one
    ConfigError naming ``label`` (``--agent``) and the reference."""
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
