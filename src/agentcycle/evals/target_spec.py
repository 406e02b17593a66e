"""The ``--target`` string syntax, for the CLI and suite files:

- ``openai:http://127.0.0.1:8000/v1#base``: an OpenAI-compatible endpoint, ``#model``
  (key from ``AGENTCYCLE_API_KEY`` or ``OPENAI_API_KEY``);
- ``router:router.yaml#route``: the agentcycle Router from a router config file;
- ``app:http://host:8080``: an agent app (``POST /v1/ask``);
- ``python:package.module:function`` or ``python:path/to/file.py:function``;
- ``agent:KIND``: any agent (``rag``, ``tools``, ``multi``, ``workflow``, or a user's
  from the ``agentcycle.agents`` entry points or ``module:function``) on the configured
  or bundled model, options ``collection, model, top_k, keep_sentences, max_tokens,
  max_steps, workers, max_iterations, tool`` (comma-separated module:function references);
- ``rag:COLLECTION``: the RAG agent over a collection (the legal example's collection
  is ingested on first use).

Options go after ``?``: ``rag:marvale-tenancy?top_k=1&max_tokens=48``,
``openai:URL#model?max_tokens=64&system=Answer briefly.``
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from agentcycle import plugins
from agentcycle.errors import ConfigError
from agentcycle.evals.targets import (
    CallableTarget,
    HttpAppTarget,
    OpenAITarget,
    RouterTarget,
    Target,
    digest,
)

KINDS = ("openai", "router", "app", "python", "rag", "agent")


def split_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """'kind:rest?a=1' -> (kind, rest, {'a': '1'})."""
    kind, sep, rest = spec.partition(":")
    if not sep or kind not in KINDS:
        raise ConfigError(f"bad target '{spec}': start it with one of "
                          f"{', '.join(k + ':' for k in KINDS)} (e.g. 'openai:URL#model')")
    rest, _, query = rest.partition("?")
    return kind, rest, dict(parse_qsl(query))


@contextlib.contextmanager
def open_target(spec: str, settings=None, *, base_dir: Path | None = None) -> Iterator[Target]:
    """A Target for ``spec``; what it starts (a model server) stops when the block ends.
    Relative paths are taken from ``base_dir`` (the suite's folder) when they exist there."""
    kind, rest, options = split_spec(spec)
    if kind == "openai":
        yield _openai(rest, options)
    elif kind == "app":
        yield HttpAppTarget(rest, api_key=options.get("key"))
    elif kind == "python":
        yield CallableTarget(load_callable(rest, base_dir))
    elif kind == "router":
        with _router(rest, options, base_dir) as target:
            yield target
    elif kind == "agent":
        with _agent(rest, options, settings, base_dir) as target:
            yield target
    else:
        with _rag(rest, options, settings) as target:
            yield target


def _int(options: dict[str, str], name: str, default: int) -> int:
    try:
        return int(options.get(name, default))
    except ValueError:
        raise ConfigError(f"target option '{name}' must be a whole number") from None


def _openai(rest: str, options: dict[str, str]) -> OpenAITarget:
    url, _, model = rest.partition("#")
    if not url.startswith(("http://", "https://")) or not model:
        raise ConfigError(f"bad openai target '{rest}': write openai:URL#MODEL, e.g. "
                          "openai:http://127.0.0.1:8000/v1#base")
    key = options.get("key") or os.environ.get("AGENTCYCLE_API_KEY") or os.environ.get(
        "OPENAI_API_KEY")
    return OpenAITarget(url, model, key, system_prompt=options.get("system"),
                        max_tokens=_int(options, "max_tokens", 256),
                        temperature=float(options.get("temperature", 0.0)))


def _resolve(path: str, base_dir: Path | None) -> Path:
    candidate = Path(path).expanduser()
    if not candidate.is_absolute() and base_dir and (base_dir / candidate).exists():
        return base_dir / candidate
    return candidate


def load_callable(ref: str, base_dir: Path | None = None) -> Callable[..., Any]:
    """'pkg.module:function' or 'file.py:function' -> the function."""
    try:
        fn = plugins.load_object(ref, base_dir, kind="function")
    except ConfigError as exc:
        raise ConfigError(f"python target: {exc}") from None
    if not callable(fn):
        raise ConfigError(f"python target: '{ref}' is a {type(fn).__name__}, not a function")
    return fn


@contextlib.contextmanager
def _router(rest: str, options: dict[str, str], base_dir: Path | None) -> Iterator[Target]:
    from agentcycle.router import Router

    path, _, route = rest.partition("#")
    router = Router.from_config(_resolve(path, base_dir))
    try:
        yield RouterTarget(router, name=Path(path).name, route=route or None,
                           max_tokens=_int(options, "max_tokens", 256))
    finally:
        router.close()  # flush its accounting log


_AGENT_OPTIONS = {"collection": str, "model": str, "top_k": int, "keep_sentences": int,
                  "max_tokens": int, "max_steps": int, "workers": int, "worker": str,
                  "max_iterations": int, "tool": str}


@contextlib.contextmanager
def _agent(kind: str, options: dict[str, str], settings, base_dir: Path | None
           ) -> Iterator[Target]:
    """Any agent kind through the one interface (``agent:tools?max_steps=4``)."""
    from agentcycle.session import AgentOptions, agent_session
    from agentcycle.settings import Settings

    unknown = sorted(set(options) - set(_AGENT_OPTIONS))
    if unknown:
        raise ConfigError(f"agent target: unknown option {', '.join(unknown)} (known: "
                          f"{', '.join(_AGENT_OPTIONS)})")
    if not kind:
        raise ConfigError("agent target: name the kind, e.g. agent:tools or agent:rag")
    values: dict[str, Any] = {k: _int(options, k, 0) if t is int else options[k]
                              for k, t in _AGENT_OPTIONS.items() if k in options}
    small = [k for k, v in values.items() if isinstance(v, int) and v < 1]
    if small:  # as on the command line (min=1): 0 steps would fail every case, not the gate
        raise ConfigError(f"target option '{small[0]}' must be at least 1")
    tools = values.pop("tool", None)
    agent_options = AgentOptions(**values, tools=tools.split(",") if tools else [])
    with agent_session(settings or Settings(), kind, agent_options) as session:
        router = getattr(session.agent, "router", None)
        served = ",".join(f"{b.name}={b.model}" for b in getattr(router, "backends", []))
        yield CallableTarget(session.agent.arun,
                             key=f"agent:{kind}:{served}:" + digest(sorted(options.items())))


@contextlib.contextmanager
def _rag(collection: str, options: dict[str, str], settings) -> Iterator[Target]:
    """``rag:COLLECTION``: the RAG agent (``agent:rag?collection=...``) under its old name."""
    with _agent("rag", {**options, **({"collection": collection} if collection else {})},
                settings, None) as target:
        yield target
