"""Agentic workflows: a LangGraph graph with durable checkpoints and a human approval.

research (a side effect, done once per thread) -> draft (a model call) -> review (rules or
a model) -> revise, looping at most ``max_iterations`` times -> approval (LangGraph
``interrupt``: approve, edit or reject) -> finalize (the answer goes to the outbox).
Checkpoints live in SQLite under the data dir, or in the platform's PostgreSQL.
"""

from __future__ import annotations

from typing import Any

from agentcycle.agents.workflow.agent import ThreadInfo, WorkflowAgent, thread_status
from agentcycle.agents.workflow.decisions import (
    Decision,
    InvalidDecision,
    ThreadFinished,
    ThreadNotFound,
    parse_decision,
)
from agentcycle.agents.workflow.review import LLMReviewer, Review, Reviewer, RuleReviewer
from agentcycle.agents.workflow.store import Ledger, checkpointer
from agentcycle.settings import Settings


def build_workflow_agent(settings: Settings, router: Any | None = None, *,
                         reviewer: str | Reviewer = "rules", required_terms: tuple = (),
                         require_citation: bool = False, min_chars: int = 1,
                         max_chars: int = 4000, **options: Any) -> WorkflowAgent:
    """A WorkflowAgent from plain options (what `agentcycle agent run workflow` passes):
    ``reviewer`` is "rules" (the deterministic checks below), "llm" (the router's model
    reviews) or a Reviewer; the rest go to :class:`WorkflowAgent` (max_iterations,
    max_tokens, researcher, route, tracing, on_node)."""
    from agentcycle.errors import ConfigError

    if reviewer == "rules":
        reviewer = RuleReviewer(min_chars=min_chars, max_chars=max_chars,
                                required_terms=required_terms,
                                require_citation=require_citation)
    elif reviewer == "llm":
        if router is None:
            raise ConfigError("the llm reviewer needs a router")
        reviewer = LLMReviewer(router, route=options.get("route"))
    elif isinstance(reviewer, str):
        raise ConfigError(f"unknown reviewer '{reviewer}' (known: rules, llm)")
    return WorkflowAgent(settings, router, reviewer=reviewer, **options)


__all__ = [
    "Decision", "InvalidDecision", "LLMReviewer", "Ledger", "Review", "Reviewer",
    "RuleReviewer", "ThreadFinished", "ThreadInfo", "ThreadNotFound", "WorkflowAgent",
    "build_workflow_agent", "checkpointer", "parse_decision", "thread_status",
]
