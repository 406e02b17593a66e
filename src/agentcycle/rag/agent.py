"""The RAG agent: a LangGraph graph of two nodes, retrieve -> generate.

Retrieval embeds the question with MiniLM and searches the Qdrant collection; the
generate node sends the prompt through the router (any OpenAI-compatible endpoint).
The whole run is one trace, with a RETRIEVER span and an LLM span per model call.
"""

from __future__ import annotations

import threading
import time
from typing import Any, TypedDict

from pydantic import BaseModel

from agentcycle.observe.tracing import setup_tracking, span
from agentcycle.rag.embeddings import Embedder
from agentcycle.rag.prompt import build_messages
from agentcycle.rag.store import ChunkStore, Hit
from agentcycle.router import Completion, Router
from agentcycle.settings import Settings


class Source(BaseModel):
    source: str
    heading: str
    score: float
    text: str


class Answer(BaseModel):
    answer: str
    sources: list[Source]
    model: str
    backend: str
    latency_ms: float
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    route_reason: str = ""


class _State(TypedDict, total=False):
    question: str
    hits: list[Hit]
    completion: Completion


class RagAgent:
    """Answer questions from a Qdrant collection with citations."""

    def __init__(self, settings: Settings, collection: str, router: Router, *,
                 embedder: Embedder | None = None, top_k: int = 3, max_tokens: int = 64):
        from agentcycle.models import embedding_model_dir

        self.settings = settings
        self.store = ChunkStore(settings, collection)
        self.embedder = embedder or Embedder(embedding_model_dir(settings))
        self.router = router
        self.top_k = top_k
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

    def retrieve(self, question: str) -> list[Hit]:
        with self._lock, span("retrieve", "RETRIEVER", inputs={"question": question},
                  attributes={"agentcycle.collection": self.store.collection},
                  settings=self.settings) as current:
            hits = self.store.search(self.embedder.embed([question])[0], self.top_k)
            current.set_outputs([{"source": h.chunk.citation, "score": h.score} for h in hits])
        return hits

    def _retrieve_node(self, state: _State) -> dict[str, Any]:
        return {"hits": self.retrieve(state["question"])}

    def _generate_node(self, state: _State) -> dict[str, Any]:
        messages = build_messages(state["question"], state["hits"])
        completion = self.router.complete(messages, max_tokens=self.max_tokens, temperature=0)
        return {"completion": completion}

    def ask(self, question: str) -> Answer:
        started = time.perf_counter()
        with span("rag agent", "AGENT", inputs={"question": question},
                  settings=self.settings) as root:  # this agent's store, whatever the env
            state = self.graph.invoke({"question": question})
            answer = _to_answer(state, (time.perf_counter() - started) * 1000)
            root.set_outputs({"answer": answer.answer,
                              "sources": [s.source for s in answer.sources]})
            root.set_attributes({"agentcycle.backend": answer.backend,
                                 "agentcycle.cost_usd": answer.cost_usd})
        return answer


def _to_answer(state: _State, latency_ms: float) -> Answer:
    completion = state["completion"]
    return Answer(
        answer=completion.text.strip(),
        sources=[Source(source=h.chunk.source, heading=h.chunk.heading, score=round(h.score, 4),
                        text=h.chunk.text) for h in state["hits"]],
        model=completion.model,
        backend=completion.backend,
        latency_ms=round(latency_ms, 1),
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
        cost_usd=completion.cost_usd,
        route_reason=completion.reason,
    )
