"""Build any kind of agent from the settings: the glue the CLI, the app and the eval
targets share. ``agent_session(settings, kind)`` starts what the agent needs (the local
model server, the embedded NATS server, the checkpointer) and stops it on exit.

Kinds: ``rag``, ``tools``, ``multi``, ``workflow``, or a user's agent from the
``agentcycle.agents`` entry-point group or a ``module:function`` factory reference.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from agentcycle.agents import Agent
from agentcycle.errors import ConfigError
from agentcycle.settings import Settings

BUILTIN_KINDS = ("rag", "tools", "multi", "workflow")


@dataclass
class AgentOptions:
    """What the command line or the app's config may set, whatever the kind."""

    collection: str | None = None  # default: the legal example's
    model: str | None = None  # a model dir, or a name served by the server / gateway
    top_k: int = 3
    keep_sentences: int | None = None  # rag: cut passages to their N closest sentences
    max_tokens: int = 128
    max_steps: int = 5
    tools: list[str] = field(default_factory=list)  # module:function references
    workers: int = 2  # multi-agent: workers started in this process
    worker: str = "rag"  # multi-agent: the kind each worker is (rag or tools)
    max_iterations: int = 2  # workflow: review -> revise rounds


@dataclass
class AgentSession:
    """A running agent, and the checks ``/ready`` runs for what it depends on."""

    agent: Agent
    ready_checks: dict[str, Callable[[], None]] = field(default_factory=dict)


@contextlib.contextmanager
def agent_session(settings: Settings, kind: str,
                  options: AgentOptions | None = None) -> Iterator[AgentSession]:
    options = options or AgentOptions()
    builders = {"rag": _rag, "tools": _tools, "multi": _multi, "workflow": _workflow}
    builder = builders.get(kind)
    if builder is None:
        with _user_agent(settings, kind, options) as session:
            yield session
        return
    with builder(settings, options) as session:
        yield session


def _collection(options: AgentOptions) -> str:
    from agentcycle.examples import LEGAL_COLLECTION

    return options.collection or LEGAL_COLLECTION


@contextlib.contextmanager
def _router(settings: Settings, options: AgentOptions) -> Iterator[Any]:
    from agentcycle.rag.session import router_session

    with router_session(settings, options.model) as router:
        yield router


def model_check(router: Any) -> Callable[[], None]:
    """Ready when the first backend's server answers ``/models`` (our gate, vLLM, LiteLLM)."""
    import httpx

    backend = router.backends[0]

    def check() -> None:
        if not backend.api_base:
            return  # a provider model through the LiteLLM SDK: nothing local to probe
        response = httpx.get(backend.api_base.rstrip("/") + "/models", timeout=3,
                             headers={"Authorization": f"Bearer {backend.api_key or 'none'}"})
        response.raise_for_status()
    return check


def qdrant_check(settings: Settings, collection: str) -> Callable[[], None]:
    from agentcycle.rag.store import ChunkStore

    def check() -> None:
        ChunkStore(settings, collection).require()
    return check


@contextlib.contextmanager
def _rag(settings: Settings, options: AgentOptions) -> Iterator[AgentSession]:
    from agentcycle.rag.session import agent_session as rag_session

    collection = _collection(options)
    _ensure_legal(settings, collection)
    with rag_session(settings, collection, model=options.model, top_k=options.top_k,
                     keep_sentences=options.keep_sentences,
                     max_tokens=options.max_tokens) as agent:
        yield AgentSession(agent, {"model": model_check(agent.router),
                                   "qdrant": qdrant_check(settings, collection)})


def _ensure_legal(settings: Settings, collection: str) -> None:
    """Zero-config for the shipped example: ingest the legal corpus on first use."""
    from agentcycle.examples.legal import LEGAL_COLLECTION, ensure_legal_collection

    if collection == LEGAL_COLLECTION:
        ensure_legal_collection(settings)


def tool_set(settings: Settings, references: list[str]) -> list[Any]:
    """The legal example's tools plus the user's (``module:function`` references)."""
    from agentcycle.examples.legal.tools import legal_tools
    from agentcycle.plugins import load_tool

    user_tools = [load_tool(ref) for ref in references]  # a bad reference fails first
    return [*legal_tools(settings), *user_tools]


@contextlib.contextmanager
def _tools(settings: Settings, options: AgentOptions) -> Iterator[AgentSession]:
    from agentcycle.agents import ToolAgent
    from agentcycle.examples import LEGAL_TOOL_PROMPT

    tools = tool_set(settings, options.tools)
    with _router(settings, options) as router:
        agent = ToolAgent(router, tools, system_prompt=LEGAL_TOOL_PROMPT,
                          max_steps=options.max_steps, max_tokens=options.max_tokens,
                          settings=settings)
        yield AgentSession(agent, {"model": model_check(router),
                                   "qdrant": qdrant_check(settings, _collection(options))})


@contextlib.contextmanager
def _multi(settings: Settings, options: AgentOptions) -> Iterator[AgentSession]:
    """A coordinator over NATS (the platform's, or the embedded server) and
    ``options.workers`` workers in this process, each answering with the ``worker``
    kind (RAG by default). More workers: ``agentcycle multi worker`` elsewhere."""
    from agentcycle.agents.multi import MultiAgent, run_workers
    from agentcycle.messaging import nats_session

    if options.worker not in ("rag", "tools"):
        raise ConfigError(f"unknown worker kind '{options.worker}': use rag or tools")
    builder = _rag if options.worker == "rag" else _tools
    with nats_session(settings) as url:
        nats_check(url)()  # unreachable: say so before paying for a model start
        with builder(settings, options) as inner:
            # One agent shared by the workers: Qdrant local mode admits one client.
            with run_workers([inner.agent] * options.workers, url):
                yield AgentSession(MultiAgent(settings, url=url),
                                   {**inner.ready_checks, "nats": nats_check(url)})


def nats_check(url: str) -> Callable[[], None]:
    def check() -> None:
        import asyncio

        from agentcycle.messaging import connect

        async def probe() -> None:
            connection = await connect(url, timeout=2, max_reconnect_attempts=0)
            await connection.close()
        asyncio.run(probe())
    return check


@contextlib.contextmanager
def _workflow(settings: Settings, options: AgentOptions) -> Iterator[AgentSession]:
    from agentcycle.agents.workflow import build_workflow_agent

    with _router(settings, options) as router:
        agent = build_workflow_agent(settings, router, max_iterations=options.max_iterations,
                                     max_tokens=options.max_tokens)
        try:
            yield AgentSession(agent, {"model": model_check(router)})
        finally:
            agent.close()


@contextlib.contextmanager
def _user_agent(settings: Settings, reference: str,
                options: AgentOptions) -> Iterator[AgentSession]:
    """A user's agent: ``factory(settings, options) -> Agent`` by entry point or reference."""
    from agentcycle.plugins import load_agent

    agent = load_agent(reference, settings, options, label="")
    try:
        # A factory's agent may name its own dependencies for /ready (the templates do).
        yield AgentSession(agent, dict(getattr(agent, "ready_checks", None) or {}))
    finally:
        close = getattr(agent, "close", None)
        if callable(close):
            close()
