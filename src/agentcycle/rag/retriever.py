"""Retrieval as the agent does it, shared with fine-tuning's prompt builder so the
tuned model trains on exactly the context it will be served."""

from __future__ import annotations

from agentcycle.models.embeddings import Embedder
from agentcycle.rag.compress import SentenceCompressor
from agentcycle.rag.store import ChunkStore, Hit


class Retriever:
    """The ``top_k`` passages for a question, cut to their ``keep_sentences`` sentences
    closest to it when set (:mod:`agentcycle.rag.compress`)."""

    def __init__(self, store: ChunkStore, embedder: Embedder, top_k: int = 3,
                 keep_sentences: int | None = None):
        self.store = store
        self.embedder = embedder
        self.top_k = top_k
        self.keep_sentences = keep_sentences
        self._compressor = (SentenceCompressor(embedder, keep_sentences)
                            if keep_sentences else None)

    def __call__(self, question: str) -> list[Hit]:
        vector = self.embedder.embed([question])[0]
        hits = self.store.search(vector, self.top_k)
        return self._compressor.compress(vector, hits) if self._compressor else hits
