"""Ingest a folder into a Qdrant collection: load, chunk, embed, then write."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agentcycle.models.embeddings import Embedder
from agentcycle.rag.documents import load_documents, split_documents
from agentcycle.rag.store import ChunkStore
from agentcycle.settings import Settings


@dataclass
class IngestReport:
    collection: str
    documents: int
    chunks: int
    location: str


def ingest(folder: str | Path, collection: str, settings: Settings | None = None, *,
           chunk_size: int = 700, overlap: int = 120, embedder: Embedder | None = None,
           progress: Callable[[int, int], None] | None = None) -> IngestReport:
    """Everything is read and embedded before the collection is touched, so a bad file
    leaves the previous collection as it was."""
    from agentcycle.models import embedding_model_dir

    settings = settings or Settings()
    documents = load_documents(folder)
    chunks = split_documents(documents, chunk_size=chunk_size, overlap=overlap)
    embedder = embedder or Embedder(embedding_model_dir(settings))
    vectors = []
    for start in range(0, len(chunks), 32):
        vectors.extend(embedder.embed([c.text for c in chunks[start : start + 32]]))
        if progress:
            progress(min(start + 32, len(chunks)), len(chunks))
    store = ChunkStore(settings, collection)
    store.replace(chunks, vectors)
    return IngestReport(collection, len(documents), len(chunks), store.location)
