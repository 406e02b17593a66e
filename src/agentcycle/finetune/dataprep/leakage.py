"""Leakage between a training set and a test set: the same question, or a near-paraphrase.

A test question that also sits in training (or reworded, "How long is the notice period?"
vs "What is the notice period's length?") makes the measured win a memory test. Two
checks: exact match after normalising case, whitespace and punctuation (cheap, certain),
and cosine similarity of MiniLM sentence embeddings >= ``threshold`` (catches rewording).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Protocol

import numpy as np

DEFAULT_THRESHOLD = 0.9


class SupportsEmbed(Protocol):
    """What :class:`agentcycle.rag.Embedder` offers: unit-norm embeddings as a matrix."""

    def embed(self, texts: list[str], batch_size: int = 32) -> np.ndarray: ...


@dataclass(frozen=True)
class Leak:
    """One training text that leaks one test text."""

    train_index: int
    test_index: int
    train_text: str
    test_text: str
    score: float  # cosine similarity; 1.0 for an exact (normalised) match
    kind: str  # "exact" or "paraphrase"

    def describe(self, width: int = 60) -> str:
        return (f"{self.kind} ({self.score:.3f}): train[{self.train_index}] "
                f"{_clip(self.train_text, width)!r} ~ test[{self.test_index}] "
                f"{_clip(self.test_text, width)!r}")


def normalise(text: str) -> str:
    """Lower case, accents folded, punctuation dropped, whitespace collapsed."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = re.sub(r"[^\w\s]", " ", text)
    return " ".join(text.split())


def find_leaks(train: list[str], test: list[str], embedder: SupportsEmbed | None,
               threshold: float = DEFAULT_THRESHOLD) -> list[Leak]:
    """Every training text that equals or paraphrases a test text, most similar first.

    Each training text is reported once, against its closest test text. With
    ``embedder=None`` only exact (normalised) matches are found.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if not train or not test:
        return []
    leaks = _exact(train, test)
    if embedder is not None:
        exact = {leak.train_index for leak in leaks}
        leaks += _paraphrases(train, test, embedder, threshold, exact)
    return sorted(leaks, key=lambda leak: (-leak.score, leak.train_index))


def _exact(train: list[str], test: list[str]) -> list[Leak]:
    first_test: dict[str, int] = {}
    for j, text in enumerate(test):
        first_test.setdefault(normalise(text), j)
    leaks = []
    for i, text in enumerate(train):
        j = first_test.get(normalise(text))
        if j is not None and normalise(text):
            leaks.append(Leak(i, j, text, test[j], 1.0, "exact"))
    return leaks


def _paraphrases(train: list[str], test: list[str], embedder: SupportsEmbed,
                 threshold: float, skip: set[int]) -> list[Leak]:
    train_vectors = _unit(embedder.embed(train))
    test_vectors = _unit(embedder.embed(test))
    leaks = []
    # Blocks of rows keep the similarity matrix small for large training sets.
    for start in range(0, len(train), 1024):
        scores = train_vectors[start:start + 1024] @ test_vectors.T
        best = scores.argmax(axis=1)
        for offset, j in enumerate(best):
            i, score = start + offset, float(scores[offset, j])
            if i not in skip and score >= threshold:
                leaks.append(Leak(i, int(j), train[i], test[int(j)], min(score, 1.0),
                                  "paraphrase"))
    return leaks


def _unit(vectors: np.ndarray) -> np.ndarray:
    # Embedder already normalises; a custom embedder may not, and cosine needs unit rows.
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1.0, norms)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
