"""Context compression on the legal test split: how often the cited sentence reaches the
prompt, and how long the context is, for whole passages and for passages cut to their N
sentences closest to the question (agentcycle.rag.compress), side by side in one run.

No model is called: this is the retrieval half of the RAG prompt. Run:
    python benchmarks/context_compression.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from agentcycle.examples import LEGAL_COLLECTION, legal_corpus_dir, legal_split
from agentcycle.finetune import read_jsonl
from agentcycle.models import embedding_model_dir
from agentcycle.rag import ChunkStore, Embedder, Retriever, ingest
from agentcycle.settings import Settings

SHAPES = [(1, None), (2, None), (1, 1), (1, 2), (1, 3), (2, 2), (2, 3)]  # (top_k, keep)


def flat(text: str) -> str:
    return " ".join(text.split())


def main() -> None:
    settings = Settings(home=Path(tempfile.mkdtemp(prefix="compression-")))
    embedder = Embedder(embedding_model_dir(settings))
    ingest(legal_corpus_dir(), LEGAL_COLLECTION, settings, embedder=embedder)
    store = ChunkStore(settings, LEGAL_COLLECTION)
    cases = read_jsonl(legal_split("test"))
    table = Table(title=f"Cited sentence in the context, {len(cases)} test questions")
    for column in ("top_k", "keep", "cited sentence in", "context chars (mean)"):
        table.add_column(column, justify="right")
    for top_k, keep in SHAPES:
        retrieve = Retriever(store, embedder, top_k, keep)
        found = chars = 0
        for case in cases:
            context = flat(" ".join(hit.chunk.text for hit in retrieve(case["question"])))
            found += flat(case["evidence"]) in context
            chars += len(context)
        table.add_row(str(top_k), str(keep or "whole"),
                      f"{found}/{len(cases)} ({found / len(cases):.0%})",
                      f"{chars / len(cases):.0f}")
    Console(width=80).print(table)


if __name__ == "__main__":
    main()
