"""The workflow agent: runs the graph to the human approval, resumes it by thread id
(in this process or any later one with the same store), and lists the threads."""

from __future__ import annotations

import contextlib
import functools
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from types import SimpleNamespace
from typing import Any

from agentcycle.agents._protocol import BaseAgent
from agentcycle.agents._result import AgentResult, Source, Step
from agentcycle.agents.workflow.decisions import (
    Decision,
    InvalidDecision,
    ThreadFinished,
    ThreadNotFound,
    parse_decision,
)
from agentcycle.agents.workflow.graph import NodeHook, Researcher, WorkflowGraph
from agentcycle.agents.workflow.review import Reviewer, RuleReviewer
from agentcycle.agents.workflow.store import Ledger, checkpointer, redact, store_errors
from agentcycle.errors import AgentcycleError, ConfigError
from agentcycle.settings import Settings

# A thread's status: waiting for approval, finished either way, or stopped part-way
# (the process died or a model call failed): `resume` continues it from its checkpoint.
INTERRUPTED, COMPLETED, REJECTED, INCOMPLETE = "interrupted", "completed", "rejected", "incomplete"


@dataclass
class ThreadInfo:
    thread_id: str
    task: str
    status: str
    created_at: str = ""
    next: list[str] = field(default_factory=list)
    iterations: int = 0
    draft: str = ""
    answer: str = ""
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    outbox: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _guarded(method: Callable) -> Callable:
    @functools.wraps(method)
    def wrapper(self: WorkflowAgent, *args: Any, **kwargs: Any) -> Any:
        with store_errors(self.ledger.uri):
            return method(self, *args, **kwargs)

    return wrapper


class WorkflowAgent(BaseAgent):
    """research -> draft -> review/revise (at most ``max_iterations`` revisions) -> human
    approval (``interrupt``) -> finalize (the outbox), checkpointed after every node."""

    kind = "workflow"

    def __init__(self, settings: Settings, router: Any | None = None, *,
                 reviewer: Reviewer | None = None, researcher: Researcher | None = None,
                 max_iterations: int = 2, max_tokens: int = 256, route: str | None = None,
                 tracing: bool = True, on_node: NodeHook | None = None):
        self.settings = settings
        self._stack = contextlib.ExitStack()
        try:
            self.ledger = Ledger(settings)
            self._stack.callback(self.ledger.close)
            self.saver = self._stack.enter_context(checkpointer(settings))
        except BaseException:
            self._stack.close()
            raise
        self.tracing = tracing
        self.workflow = WorkflowGraph(
            settings, self.ledger, router=router, reviewer=reviewer or RuleReviewer(),
            researcher=researcher, max_iterations=max_iterations, max_tokens=max_tokens,
            route=route, tracing=tracing, on_node=on_node)
        self.graph = self.workflow.compile(self.saver)

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> WorkflowAgent:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- runs ----------------------------------------------------------------------------
    @_guarded
    def run(self, task: str, thread_id: str | None = None, **options: Any) -> AgentResult:
        """Start a thread; returns ``interrupted`` at the approval (or ``failed``)."""
        if not task or not task.strip():
            raise ConfigError("the workflow needs a task (got an empty one)")
        if options:
            raise ConfigError(f"unknown workflow options: {', '.join(sorted(options))}")
        thread_id = thread_id or uuid.uuid4().hex[:12]
        if self._snapshot(thread_id).values:
            raise ConfigError(f"thread '{thread_id}' already exists: resume it "
                              f"(agentcycle workflow resume {thread_id}) or pick another id")
        self.ledger.register(thread_id, task.strip())
        return self._drive(thread_id, {"task": task.strip(), "status": "running",
                                       "max_iterations": self.workflow.max_iterations})

    @_guarded
    def resume(self, thread_id: str, decision: Decision | dict | str | None = None
               ) -> AgentResult:
        """Continue a thread: with the human's decision when it waits for approval, without
        one when it stopped part-way (a crash, a failed model call)."""
        from langgraph.types import Command

        status, snapshot = self._status(thread_id)
        if status in (COMPLETED, REJECTED):
            raise ThreadFinished(f"thread '{thread_id}' is already {status}: nothing to resume")
        if status == INTERRUPTED:
            if decision is None:
                raise InvalidDecision(f"thread '{thread_id}' waits for approval: approve, "
                                      "edit (with text) or reject (with a reason)")
            return self._drive(thread_id, Command(resume=parse_decision(decision).model_dump()))
        if decision is not None:
            raise InvalidDecision(f"thread '{thread_id}' has not reached the approval yet "
                                  f"(next: {', '.join(snapshot.next)}): resume it without a "
                                  "decision first")
        return self._drive(thread_id, None)

    def approve(self, thread_id: str, text: str | None = None) -> AgentResult:
        edit = text is not None and text != ""
        return self.resume(thread_id, {"action": "edit", "text": text} if edit else "approve")

    def reject(self, thread_id: str, reason: str) -> AgentResult:
        return self.resume(thread_id, parse_decision({"action": "reject", "reason": reason}))

    def _drive(self, thread_id: str, graph_input: Any) -> AgentResult:
        started = time.perf_counter()
        config = {"configurable": {"thread_id": thread_id}}
        error, trace_id = None, None
        with self._root_span(thread_id) as root:
            trace_id = getattr(root, "trace_id", None)
            try:
                # "sync": each node's checkpoint is on disk before the next node starts,
                # so a process killed between two nodes loses nothing.
                self.graph.invoke(graph_input, config, durability="sync")
            except AgentcycleError as exc:  # the thread keeps its last checkpoint
                error = str(exc)
        result = self._result(thread_id, (time.perf_counter() - started) * 1000, trace_id)
        if error is not None:
            result.status, result.error = "failed", error
        return result

    def _root_span(self, thread_id: str) -> Any:
        if not self.tracing:
            return contextlib.nullcontext(None)
        from agentcycle.observe.tracing import span

        return span("workflow agent", "AGENT", inputs={"thread_id": thread_id},
                    attributes={"agentcycle.thread_id": thread_id}, settings=self.settings)

    # -- state ---------------------------------------------------------------------------
    def _snapshot(self, thread_id: str) -> Any:
        return self.graph.get_state({"configurable": {"thread_id": thread_id}})

    def _status(self, thread_id: str) -> tuple[str, Any]:
        snapshot = self._snapshot(thread_id)
        if not snapshot.values:
            raise ThreadNotFound(f"no workflow thread '{thread_id}' in "
                                 f"{_where(self.ledger.uri)} (agentcycle workflow list)")
        return thread_status(snapshot), snapshot

    def _result(self, thread_id: str, latency_ms: float, trace_id: str | None) -> AgentResult:
        status, snapshot = self._status(thread_id)
        values = snapshot.values
        result = AgentResult(
            answer=values.get("answer") or values.get("draft", ""), kind=self.kind,
            status=status, latency_ms=round(latency_ms, 1), trace_id=trace_id,
            sources=[Source.model_validate(s) for s in values.get("research", [])],
            steps=[Step.model_validate(s) for s in values.get("steps", [])],
            metadata={"thread_id": thread_id, "iterations": values.get("revisions", 0),
                      "draft": values.get("draft", ""),
                      "notes": (values.get("review") or {}).get("notes", []),
                      "next": list(snapshot.next)})
        for call in values.get("calls", []):
            result.add_usage(SimpleNamespace(**call))
        if status == REJECTED:
            result.metadata["reason"] = values.get("reason", "")
        return result

    @_guarded
    def show(self, thread_id: str) -> ThreadInfo:
        status, snapshot = self._status(thread_id)
        values = snapshot.values
        created = {t[0]: t[2] for t in self.ledger.threads()}.get(thread_id, "")
        return ThreadInfo(
            thread_id=thread_id, task=values.get("task", ""), status=status, created_at=created,
            next=list(snapshot.next), iterations=values.get("revisions", 0),
            draft=values.get("draft", ""), answer=values.get("answer", ""),
            reason=values.get("reason", ""),
            notes=(values.get("review") or {}).get("notes", []),
            steps=values.get("steps", []), outbox=self.ledger.delivered(thread_id))

    @_guarded
    def threads(self) -> list[ThreadInfo]:
        """Every thread this store holds, oldest first, with its status."""
        listed = []
        for thread_id, task, created_at in self.ledger.threads():
            snapshot = self._snapshot(thread_id)
            status = thread_status(snapshot) if snapshot.values else INCOMPLETE
            listed.append(ThreadInfo(thread_id=thread_id, task=task, status=status,
                                     created_at=created_at, next=list(snapshot.next),
                                     iterations=snapshot.values.get("revisions", 0)))
        return listed

    @_guarded
    def needs_model(self, thread_id: str) -> bool:
        """Whether resuming this thread calls a model (it stopped before the approval)."""
        status, snapshot = self._status(thread_id)
        return status == INCOMPLETE and any(n in ("draft", "revise", "review", "research")
                                            for n in snapshot.next)


def thread_status(snapshot: Any) -> str:
    if snapshot.interrupts:
        return INTERRUPTED
    if not snapshot.next:
        return REJECTED if snapshot.values.get("status") == REJECTED else COMPLETED
    return INCOMPLETE


def _where(uri: str) -> str:
    return redact(uri)
