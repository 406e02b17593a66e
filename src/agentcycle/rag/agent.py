"""The RAG agent: a LangGraph graph of two nodes, retrieve -> generate.

Retrieval embeds the question with MiniLM and searches the Qdrant collection; the
generate node sends the prompt through the router (any OpenAI-compatible endpoint).
The whole run is one trace, with a RETRIEVER span and an LLM span per model call.
"""

from __future__ import annotations

import threading
import time
from typing import Any, TypedDict

from agentcycle.agents import AgentResult, BaseAgent, Source, Step
from agentcycle.agents._result import elapsed_ms
from agentcycle.models.embeddings import Embedder
from agentcycle.observe.tracing import setup_tracking, span
from agentcycle.rag.prompt import build_messages
from agentcycle.rag.retriever import Retriever
from agentcycle.rag.store import ChunkStore, Hit
from agentcycle.router import Completion, Router
from agentcycle.settings import Settings

# The RAG agent's result is the one every agent returns; the old name stays importable.
Answer = AgentResult


class _State(TypedDict, total=False):
    question: str
    max_tokens: int
    hits: list[Hit]
    completion: Completion
    steps: list[Step]


class RagAgent(BaseAgent):
    """Answer questions from a Qdrant collection with citations."""

    kind = "rag"

    def __init__(self, settings: Settings, collection: str, router: Router, *,
                 embedder: Embedder | None = None, top_k: int = 3, max_tokens: int = 64,
                 keep_sentences: int | None = None):
        """``keep_sentences``: cut the ``top_k`` passages to their N sentences closest to
        the question (:mod:`agentcycle.rag.compress`); None sends whole passages."""
        from agentcycle.models import embedding_model_dir

        self.settings = settings
        self.store = ChunkStore(settings, collection)
        self.embedder = embedder or Embedder(embedding_model_dir(settings))
        self.retriever = Retriever(self.store, self.embedder, top_k, keep_sentences)
        self.router = router
        self.max_tokens = max_tokens
        self.graph = self._build_graph()
        self._lock = threading.Lock()  # Qdrant local mode is not safe across threads
        setup_tracking(settings)

    def _build_graph(self):
        from langgraph.graph import END, START, StateGraph

        graph = StateGraph(_State)
        graph.add_node("retrieve", self._retrieve_node)
        graph.add_node("generate", self._generate_node)
        graph.add_edge(START, "retrieve")
        graph.add_edge("retrieve", "generate")
        graph.add_edge("generate", END)
        return graph.compile()

    @property
    def top_k(self) -> int:
        return self.retriever.top_k

    def retrieve(self, question: str) -> list[Hit]:
        with self._lock, span("retrieve", "RETRIEVER", inputs={"question": question},
                  attributes={"agentcycle.collection": self.store.collection},
                  settings=self.settings) as current:
            hits = self.retriever(question)
            current.set_outputs([{"source": h.chunk.citation, "score": h.score} for h in hits])
        return hits

    def _retrieve_node(self, state: _State) -> dict[str, Any]:
        started = time.perf_counter()
        hits = self.retrieve(state["question"])
        step = Step(kind="retrieve", name="retrieve", latency_ms=elapsed_ms(started),
                    detail={"hits": len(hits), "collection": self.store.collection})
        return {"hits": hits, "steps": [step]}

    def _generate_node(self, state: _State) -> dict[str, Any]:
        messages = build_messages(state["question"], state["hits"])
        completion = self.router.complete(messages, max_tokens=state["max_tokens"], temperature=0)
        step = Step.model_call("generate", latency_ms=completion.latency_ms,
                               backend=completion.backend,
                               finish_reason=completion.finish_reason, reason=completion.reason)
        return {"completion": completion, "steps": [*state.get("steps", []), step]}

    def run(self, task: str, **options: Any) -> AgentResult:
        """Answer ``task`` (a question) from the collection, citing the passages used;
        ``max_tokens`` (a request's own bound) replaces the agent's for this answer."""
        started = time.perf_counter()
        max_tokens = options.get("max_tokens") or self.max_tokens
        with span("rag agent", "AGENT", inputs={"question": task},
                  settings=self.settings) as root:  # this agent's store, whatever the env
            state = self.graph.invoke({"question": task, "max_tokens": max_tokens})
            result = _to_result(state, elapsed_ms(started), getattr(root, "trace_id", None))
            root.set_outputs({"answer": result.answer,
                              "sources": [s.source for s in result.sources]})
            root.set_attributes({"agentcycle.backend": result.backend,
                                 "agentcycle.cost_usd": result.cost_usd})
        return result

    def ask(self, question: str) -> AgentResult:
        """The RAG agent's original name for :meth:`run`."""
        return self.run(question)


def _to_result(state: _State, latency_ms: float, trace_id: str | None) -> AgentResult:
    result = AgentResult(
        answer=state["completion"].text.strip(), kind="rag",
        sources=[Source(source=h.chunk.source, heading=h.chunk.heading, score=round(h.score, 4),
                        text=h.chunk.text) for h in state["hits"]],
        steps=state.get("steps", []), latency_ms=latency_ms, trace_id=trace_id)
    result.add_usage(state["completion"])
    return result
