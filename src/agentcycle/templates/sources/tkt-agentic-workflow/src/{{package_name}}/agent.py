"""The agentic workflow: a LangGraph graph, checkpointed after every node (SQLite here,
the platform's PostgreSQL when DATABASE_URL is set):

    research (docs/, once per thread) -> draft -> review -> revise (at most
    max_iterations) -> approval (waits for a human) -> finalize

``POST /v1/ask`` returns ``status: interrupted`` with the thread id and the draft;
``POST /v1/workflows/{thread_id}/resume`` with ``{"decision": "approve"}`` (or ``edit``
with ``text``, or ``reject`` with ``reason``) finishes it, from any replica or restart.

Edit freely: ``build_agent`` is what the app (``agentcycle app --agent``), the eval suite
(``--target agent:...``) and the tests call; ``review`` and ``research`` below are yours.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

from agentcycle.agents import Source
from agentcycle.agents.workflow import RuleReviewer, build_workflow_agent
from agentcycle.rag.session import router_session
from agentcycle.session import AgentOptions, AgentSession, model_check
from agentcycle.settings import Settings

from .config import AppConfig
from .knowledge import search
from .runtime import HeldAgent, hold, with_model

# What a draft must satisfy before a human sees it; a failed rule sends it back to the
# model with the rule's note (at most max_iterations times).
review = RuleReviewer(min_chars=20, max_chars=1200)


def research(docs_dir: Path) -> Callable[[str], list[Source]]:
    """The research step: the handbook passages closest to the task."""

    def find(task: str) -> list[Source]:
        return search(docs_dir, task, k=2)
    return find


@contextlib.contextmanager
def _session(settings: Settings, options: AgentOptions,
             config: AppConfig) -> Iterator[AgentSession]:
    with router_session(settings, options.model) as router:
        agent = build_workflow_agent(settings, router, reviewer=review,
                                     researcher=research(config.docs_dir),
                                     max_iterations=options.max_iterations,
                                     max_tokens=options.max_tokens)
        try:
            yield AgentSession(agent, {"model": model_check(router)})
        finally:
            agent.close()


def build_agent(settings: Settings | None = None,
                options: AgentOptions | None = None) -> HeldAgent:
    settings, config = settings or Settings(), AppConfig()
    return hold(_session(settings, with_model(options, config), config))
