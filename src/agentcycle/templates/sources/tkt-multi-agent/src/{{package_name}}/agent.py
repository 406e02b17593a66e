"""The multi-agent app: a coordinator splits a question into sub-questions, publishes
them on a NATS JetStream work queue, and RAG workers (started in this process, more with
``build_worker`` below) answer each from ``docs/``; the reporter merges their answers.
NATS is embedded here and the platform's at NATS_URL.

Edit freely: ``build_agent`` is what the app (``agentcycle app --agent``), the eval suite
(``--target agent:...``) and the tests call.
"""

from __future__ import annotations

import dataclasses

from agentcycle.session import AgentOptions, agent_session
from agentcycle.settings import Settings

from .config import AppConfig
from .runtime import HeldAgent, hold, ingest_docs, with_model


def build_agent(settings: Settings | None = None,
                options: AgentOptions | None = None) -> HeldAgent:
    settings, config = settings or Settings(), AppConfig()
    options = ingest_docs(settings, with_model(options, config), config)
    # Workers: the caller's count when it set one (agent:...?workers=3), else WORKERS.
    workers = options.workers if options.workers != AgentOptions.workers else config.workers
    options = dataclasses.replace(options, worker="rag", workers=workers)
    return hold(agent_session(settings, "multi", options))


def build_worker(settings: Settings | None = None,
                 options: AgentOptions | None = None) -> HeldAgent:
    """One more worker for the pool, from any machine that reaches NATS and Qdrant:
    ``agentcycle multi worker --agent <package>.agent:build_worker``."""
    settings, config = settings or Settings(), AppConfig()
    options = ingest_docs(settings, with_model(options, config), config)
    return hold(agent_session(settings, "rag", options))
