"""Keep an agent's resources (model server, NATS, Qdrant client, checkpointer) open for
as long as the app or the eval run uses it: ``hold(session)`` enters an agentcycle
``AgentSession`` context and returns the agent, which closes them on ``close()``."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from typing import Any

from agentcycle.agents import AgentResult
from agentcycle.session import AgentOptions, AgentSession
from agentcycle.settings import Settings

from .config import AppConfig


class HeldAgent:
    """An agent with its session held open; everything else is the agent's own
    (``router``, ``resume`` of a workflow...). ``ready_checks`` feed ``/ready``."""

    def __init__(self, session: contextlib.AbstractContextManager[AgentSession]):
        self._stack = contextlib.ExitStack()
        entered = self._stack.enter_context(session)
        self.agent = entered.agent
        self.ready_checks: dict[str, Callable[[], None]] = dict(entered.ready_checks)

    @property
    def kind(self) -> str:
        return self.agent.kind

    def run(self, task: str, **options: Any) -> AgentResult:
        return self.agent.run(task, **options)

    async def arun(self, task: str, **options: Any) -> AgentResult:
        return await self.agent.arun(task, **options)

    def close(self) -> None:
        self._stack.close()

    def __getattr__(self, name: str) -> Any:
        if name == "agent":  # not set yet: the session failed to start
            raise AttributeError(name)
        return getattr(self.agent, name)


def hold(session: contextlib.AbstractContextManager[AgentSession]) -> HeldAgent:
    return HeldAgent(session)


def with_model(options: AgentOptions | None, config: AppConfig) -> AgentOptions:
    """The options, with the configured model (LLM_MODEL) unless the caller named one."""
    options = options or AgentOptions()
    return dataclasses.replace(options, model=options.model or config.llm_model or None)


def ingest_docs(settings: Settings, options: AgentOptions, config: AppConfig) -> AgentOptions:
    """Ingest ``DOCS_DIR`` into the options' collection (``COLLECTION`` by default): it
    replaces the collection, so every start serves the documents as they are now."""
    from agentcycle.rag.ingest import ingest

    collection = options.collection or config.collection
    ingest(config.docs_dir, collection, settings)
    return dataclasses.replace(options, collection=collection)
