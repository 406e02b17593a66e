"""Shipped example domains (package data)."""

from agentcycle.examples.legal import LEGAL_COLLECTION, legal_corpus_dir, legal_split

__all__ = ["LEGAL_COLLECTION", "legal_corpus_dir", "legal_split"]
