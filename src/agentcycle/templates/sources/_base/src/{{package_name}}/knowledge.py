"""Keyword search over the project's documents (``docs/``), with no vector store: the
tool agent's ``search_docs`` tool and the workflow's research step use it. (The RAG and
multi-agent kinds ingest the same folder into Qdrant and search by embeddings.)"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from agentcycle.agents import Source
from agentcycle.rag.documents import load_documents, split_documents

_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset({
    "a", "an", "and", "are", "can", "do", "does", "for", "how", "i", "in", "is", "it", "my",
    "of", "on", "or", "the", "to", "what", "when", "where", "which", "who", "why", "with",
    "you", "your"})


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP}


@functools.cache
def _passages(docs_dir: Path) -> tuple[Source, ...]:
    chunks = split_documents(load_documents(docs_dir), chunk_size=600, overlap=80)
    return tuple(Source(source=c.source, heading=c.heading, text=c.text) for c in chunks)


def search(docs_dir: Path, query: str, k: int = 2) -> list[Source]:
    """The ``k`` passages sharing the most words with ``query`` (none when none do)."""
    wanted = _words(query)
    scored = []
    for passage in _passages(Path(docs_dir).resolve()):
        overlap = len(wanted & _words(passage.text))
        if overlap:
            scored.append(passage.model_copy(update={"score": float(overlap)}))
    scored.sort(key=lambda p: -p.score)
    return scored[:k]
