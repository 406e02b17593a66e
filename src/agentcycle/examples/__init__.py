"""Shipped example domains (package data)."""

from agentcycle.examples.legal import (
    LEGAL_COLLECTION,
    LEGAL_TOOL_PROMPT,
    legal_corpus_dir,
    legal_split,
)

__all__ = ["LEGAL_COLLECTION", "LEGAL_TOOL_PROMPT", "legal_corpus_dir", "legal_split"]
