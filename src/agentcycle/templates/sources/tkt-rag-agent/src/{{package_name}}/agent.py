"""The RAG agent: the documents in ``docs/`` are ingested into Qdrant at start-up (local
mode here, the platform's Qdrant when QDRANT_URL is set), then each question retrieves
the closest passages and the model answers from them, citing its sources.

Edit freely: ``build_agent`` is what the app (``agentcycle app --agent``), the eval suite
(``--target agent:...``) and the tests call.
"""

from __future__ import annotations

from agentcycle.session import AgentOptions, agent_session
from agentcycle.settings import Settings

from .config import AppConfig
from .runtime import HeldAgent, hold, ingest_docs, with_model


def build_agent(settings: Settings | None = None,
                options: AgentOptions | None = None) -> HeldAgent:
    settings, config = settings or Settings(), AppConfig()
    options = ingest_docs(settings, with_model(options, config), config)
    return hold(agent_session(settings, "rag", options))
