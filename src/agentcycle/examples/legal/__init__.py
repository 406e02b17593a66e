"""The legal example: the Residential Tenancy Act of the (fictional) Free Province of
Marvale, and question/answer pairs split train / validation / test.

The test split is for evaluation only: nothing in agentcycle trains on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from agentcycle._untrusted import DATA_RULE
from agentcycle.errors import DataError

LEGAL_COLLECTION = "marvale-tenancy"
# The tool agent's instructions for this domain (the tools come from legal.tools).
LEGAL_TOOL_PROMPT = (
    "You answer questions about the Marvale Residential Tenancy Act. Use a tool when the "
    "question needs a section of the Act, a deadline or an amount: call it with exact "
    "arguments. Answer greetings and questions about yourself directly, without tools. "
    "After a tool's result, answer in one or two sentences and cite the section (§ N). "
    + DATA_RULE)
_HERE = Path(__file__).parent
Split = Literal["train", "validation", "test"]


def legal_corpus_dir() -> Path:
    return _HERE / "corpus"


def ensure_legal_collection(settings, *, embedder=None):
    """The legal corpus's Qdrant collection, ingested on first use (zero-config for the
    shipped suites, tools and agents); returns its ChunkStore."""
    from agentcycle.rag import ChunkStore, ingest

    store = ChunkStore(settings, LEGAL_COLLECTION)
    if not store.exists():
        ingest(legal_corpus_dir(), LEGAL_COLLECTION, settings, embedder=embedder)
    return store


def legal_split(split: Split) -> Path:
    if split not in ("train", "validation", "test"):
        raise DataError(f"unknown split '{split}': use train, validation or test")
    return _HERE / "qa" / f"{split}.jsonl"
