"""The workflow graph: research -> draft -> review -> (revise -> review)* -> approval ->
finalize, a LangGraph ``StateGraph`` compiled with a durable checkpointer.

Every node is wrapped once (``_node``): it gets a span and a Step with its latency, and the
state keeps the steps and each model call's usage, so a run resumed in another process
reports the whole thread. The state holds plain data only: checkpoints must load anywhere.
"""

from __future__ import annotations

import contextlib
import operator
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Annotated, Any, TypedDict

from langchain_core.runnables import RunnableConfig

from agentcycle.agents._result import Source, Step
from agentcycle.agents.workflow.decisions import parse_decision
from agentcycle.agents.workflow.review import Reviewer, usage_of
from agentcycle.agents.workflow.store import Ledger
from agentcycle.errors import ConfigError
from agentcycle.settings import Settings

NODES = ("research", "draft", "review", "revise", "approval", "finalize")

Researcher = Callable[[str], Sequence[Source | dict[str, Any] | str]]
NodeHook = Callable[[str, str], None]


class WorkflowState(TypedDict, total=False):
    task: str
    research: list[dict[str, Any]]  # the sources the research node fetched
    draft: str
    revisions: int  # revise calls so far, at most max_iterations
    max_iterations: int  # the bound the thread started with, kept across processes
    review: dict[str, Any]  # the latest review: {"ok": bool, "notes": [...]}
    reviews: Annotated[list[dict[str, Any]], operator.add]
    decision: dict[str, Any]
    answer: str
    status: str  # running, completed, rejected
    reason: str
    calls: Annotated[list[dict[str, Any]], operator.add]  # usage of each model call
    steps: Annotated[list[dict[str, Any]], operator.add]


_SYSTEM = ("Answer the task concisely and accurately. When sources are given, use them and "
           "cite them as [n].")


def draft_messages(task: str, sources: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    context = "\n".join(f"[{i}] {s.get('heading') or s.get('source', '')}: {s.get('text', '')}"
                        for i, s in enumerate(sources, 1))
    user = (f"Sources:\n{context}\n\n" if context else "") + f"Task: {task}"
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": user}]


def revise_messages(task: str, sources: Sequence[dict[str, Any]], draft: str,
                    notes: Sequence[str]) -> list[dict[str, str]]:
    messages = draft_messages(task, sources)
    problems = "\n".join(f"- {note}" for note in notes)
    messages[1]["content"] += (f"\n\nYour previous answer:\n{draft}\n\nA reviewer found these "
                               f"problems:\n{problems}\n\nWrite the improved answer only.")
    return messages


def _source(item: Source | dict[str, Any] | str) -> dict[str, Any]:
    if isinstance(item, str):
        item = Source(source="research", text=item)
    elif isinstance(item, dict):
        item = Source.model_validate(item)
    return item.model_dump()


class _NoSpan:
    def set_inputs(self, *_: Any) -> None: ...
    def set_outputs(self, *_: Any) -> None: ...
    def set_attributes(self, *_: Any) -> None: ...


class WorkflowGraph:
    """The nodes and their wiring; ``compile(checkpointer)`` gives the runnable graph."""

    def __init__(self, settings: Settings, ledger: Ledger, *, router: Any | None,
                 reviewer: Reviewer, researcher: Researcher | None, max_iterations: int,
                 max_tokens: int, route: str | None, tracing: bool, on_node: NodeHook | None):
        if max_iterations < 0:
            raise ConfigError(f"max_iterations must be 0 or more (got {max_iterations})")
        self.settings, self.ledger, self.router = settings, ledger, router
        self.reviewer, self.researcher = reviewer, researcher
        self.max_iterations, self.max_tokens, self.route = max_iterations, max_tokens, route
        self.tracing, self.on_node = tracing, on_node

    def compile(self, checkpointer: Any) -> Any:
        from langgraph.graph import END, START, StateGraph

        graph = StateGraph(WorkflowState)
        for name, kind in (("research", "retrieve"), ("draft", "llm"), ("review", "node"),
                           ("revise", "llm"), ("approval", "approval"), ("finalize", "node")):
            graph.add_node(name, self._node(name, kind, getattr(self, f"_{name}")))
        graph.add_edge(START, "research")
        graph.add_edge("research", "draft")
        graph.add_edge("draft", "review")
        graph.add_conditional_edges("review", self._after_review, ["revise", "approval"])
        graph.add_edge("revise", "review")
        graph.add_conditional_edges("approval", self._after_approval, ["finalize", END])
        graph.add_edge("finalize", END)
        return graph.compile(checkpointer=checkpointer)

    # -- the wrapper every node runs in --------------------------------------------------
    def _node(self, name: str, kind: str, body: Callable[[WorkflowState, str], dict]) -> Callable:
        from langgraph.errors import GraphInterrupt

        def node(state: WorkflowState, config: RunnableConfig) -> dict[str, Any]:
            thread_id = config["configurable"]["thread_id"]
            if self.on_node:
                self.on_node(name, thread_id)
            started = time.perf_counter()
            waiting = None
            with self._span(name, thread_id) as current:
                try:
                    update = body(state, thread_id)
                except GraphInterrupt as exc:  # waiting for a human is not an error
                    waiting = exc
                    current.set_attributes({"agentcycle.waiting_for": "approval"})
                else:
                    current.set_outputs({k: v for k, v in update.items() if k != "calls"})
            if waiting is not None:
                raise waiting
            latency_ms = round((time.perf_counter() - started) * 1000, 3)
            detail = {"tokens": sum(c["prompt_tokens"] + c["completion_tokens"]
                                    for c in update.get("calls", []))}
            step = Step(kind=kind, name=name, latency_ms=latency_ms, detail=detail)
            return {**update, "steps": [step.model_dump()]}

        return node

    @contextlib.contextmanager
    def _span(self, name: str, thread_id: str) -> Iterator[Any]:
        if not self.tracing:
            yield _NoSpan()
            return
        from agentcycle.observe.tracing import span

        with span(f"workflow.{name}", "CHAIN", inputs={"thread_id": thread_id},
                  attributes={"agentcycle.node": name, "agentcycle.thread_id": thread_id},
                  settings=self.settings) as current:
            yield current

    def _complete(self, messages: list[dict[str, str]]) -> tuple[str, dict[str, Any]]:
        if self.router is None:
            raise ConfigError("this workflow step calls a model: build the agent with a router")
        completion = self.router.complete(messages, max_tokens=self.max_tokens, temperature=0,
                                          route=self.route)
        return completion.text.strip(), usage_of(completion)

    # -- the nodes -----------------------------------------------------------------------
    def _research(self, state: WorkflowState, thread_id: str) -> dict[str, Any]:
        # A side effect before the approval: done once per thread, even across crashes.
        def fetch() -> list[dict[str, Any]]:
            found = self.researcher(state["task"]) if self.researcher else []
            return [_source(item) for item in found]

        return {"research": self.ledger.once(thread_id, "research", fetch)}

    def _draft(self, state: WorkflowState, thread_id: str) -> dict[str, Any]:
        text, usage = self._complete(draft_messages(state["task"], state.get("research", [])))
        return {"draft": text, "revisions": 0, "calls": [usage]}

    def _review(self, state: WorkflowState, thread_id: str) -> dict[str, Any]:
        review = self.reviewer(state["task"], state["draft"], state.get("research", []))
        return {"review": review.as_dict(), "reviews": [review.as_dict()],
                "calls": [review.usage] if review.usage else []}

    def _revise(self, state: WorkflowState, thread_id: str) -> dict[str, Any]:
        messages = revise_messages(state["task"], state.get("research", []), state["draft"],
                                   state["review"]["notes"])
        text, usage = self._complete(messages)
        return {"draft": text, "revisions": state.get("revisions", 0) + 1, "calls": [usage]}

    def _approval(self, state: WorkflowState, thread_id: str) -> dict[str, Any]:
        from langgraph.types import interrupt

        decision = parse_decision(interrupt({
            "thread_id": thread_id, "draft": state["draft"],
            "iterations": state.get("revisions", 0), "notes": state["review"]["notes"]}))
        if decision.action == "reject":
            return {"decision": decision.model_dump(), "status": "rejected",
                    "reason": decision.reason or ""}
        answer = decision.text if decision.action == "edit" else state["draft"]
        return {"decision": decision.model_dump(), "answer": (answer or "").strip()}

    def _finalize(self, state: WorkflowState, thread_id: str) -> dict[str, Any]:
        self.ledger.deliver(thread_id, state["answer"], state["decision"])
        return {"status": "completed"}

    # -- the edges -----------------------------------------------------------------------
    def _after_review(self, state: WorkflowState) -> str:
        bound = state.get("max_iterations", self.max_iterations)
        done = state["review"]["ok"] or state.get("revisions", 0) >= bound
        return "approval" if done else "revise"

    def _after_approval(self, state: WorkflowState) -> str:
        from langgraph.graph import END

        return END if state.get("status") == "rejected" else "finalize"
