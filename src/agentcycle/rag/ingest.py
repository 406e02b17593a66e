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
           progress: Callable[[int, int], None] | None = None,
           write_progress: Callable[[int, int], None] | None = None) -> IngestReport:
    """Everything is read and embedded before the collection is touched, then written as
    a new version that readers switch to only when it is complete: a bad file, or an
    ingest killed at any point, leaves the previous collection answering.

    ``progress(done, total)`` follows the chunks embedded, ``write_progress`` the chunks
    written."""
    from agentcycle.models import embedding_model_dir

    settings = settings or Settings()
    store = ChunkStore(settings, collection)  # a bad name fails before the embedding
    documents = load_documents(folder)
    chunks = split_documents(documents, chunk_size=chunk_size, overlap=overlap)
    embedder = embedder or Embedder(embedding_model_dir(settings))
    vectors = []
    for start in range(0, len(chunks), 32):
        vectors.extend(embedder.embed([c.text for c in chunks[start : start + 32]]))
        if progress:
            progress(min(start + 32, len(chunks)), len(chunks))
    store.replace(chunks, vectors, progress=write_progress)
    return IngestReport(collection, len(documents), len(chunks), store.location)
