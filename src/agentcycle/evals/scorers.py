"""Scorers for an answer against its reference: keywords, exact match, similarity."""

from __future__ import annotations

import re
import unicodedata

_DASHES = dict.fromkeys(map(ord, "\u2010\u2011\u2012\u2013\u2014\u2212"), "-")
_QUOTES = dict.fromkeys(map(ord, "\u2018\u2019\u201c\u201d"), "'")


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).translate(_DASHES).translate(_QUOTES).lower()
    return re.sub(r"\s+", " ", text).strip()


def keyword_match(answer: str, keywords: list[str]) -> bool:
    """Every key fact (a figure, a deadline, a name) appears in the answer."""
    if not keywords:
        return False
    text = normalize(answer)
    return all(normalize(k) in text for k in keywords)


def exact_match(answer: str, reference: str) -> bool:
    strip = lambda s: re.sub(r"[^\w\s]", "", normalize(s)).strip()  # noqa: E731
    return strip(answer) == strip(reference)


def embedding_similarity(embedder, answers: list[str], references: list[str]) -> list[float]:
    """Cosine similarity of each answer to its reference (normalized embeddings)."""
    if not answers:
        return []
    vectors_a = embedder.embed(answers)
    vectors_b = embedder.embed(references)
    return [float((a * b).sum()) for a, b in zip(vectors_a, vectors_b, strict=True)]
