"""Context compression: keep only the retrieved sentences closest to the question.

This is LangChain's ``EmbeddingsFilter`` pattern (split the retrieved documents into
sentences, keep the ones most similar to the query), done with the agent's own embedder.
A small model picks the answering sentence far more often from three sentences than
from two whole sections, and the prompt gets shorter (docs/benchmarks.md). Sentences
stay grouped under their section's heading, so every passage still cites its section.
"""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np

from agentcycle.models.embeddings import Embedder
from agentcycle.rag.store import Hit

# A sentence ends at . ! or ? followed by whitespace and a capital, a section sign, a
# quote or a bracket: "§ 9." inside a sentence is followed by a lower-case word.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z§\"(“])")
_CACHE_LIMIT = 20_000  # sentence vectors kept per compressor (a corpus of this size fits)


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text``, whitespace collapsed; paragraph breaks end a sentence."""
    sentences = []
    for paragraph in re.split(r"\n\s*\n", text):
        flat = " ".join(paragraph.split())
        sentences += [s for s in _SENTENCE_END.split(flat) if s]
    return sentences


def _heading_and_body(text: str) -> tuple[str, str]:
    # Chunks start with their section's Markdown heading line (rag.documents).
    first, _, rest = text.partition("\n")
    return (first, rest) if first.lstrip().startswith("#") else ("", text)


class SentenceCompressor:
    """Keeps the ``keep`` sentences of a question's hits that are closest to it."""

    def __init__(self, embedder: Embedder, keep: int):
        if keep < 1:
            raise ValueError(f"keep must be at least 1 sentence, got {keep}")
        self.embedder = embedder
        self.keep = keep
        self._vectors: dict[str, np.ndarray] = {}

    def _embed(self, sentences: list[str]) -> np.ndarray:
        missing = [s for s in dict.fromkeys(sentences) if s not in self._vectors]
        if missing:
            if len(self._vectors) + len(missing) > _CACHE_LIMIT:
                self._vectors.clear()
            self._vectors.update(zip(missing, self.embedder.embed(missing), strict=True))
        return np.stack([self._vectors[s] for s in sentences])

    def compress(self, question_vector: np.ndarray, hits: list[Hit]) -> list[Hit]:
        """The hits cut to their closest sentences: one hit per section that keeps any,
        best first; within a hit, sentences best first. Scores become the best
        sentence's cosine similarity to the question."""
        candidates, seen = [], set()  # (hit index, heading, sentence)
        for index, hit in enumerate(hits):
            heading, body = _heading_and_body(hit.chunk.text)
            for sentence in split_sentences(body):
                if sentence not in seen:  # overlapping chunks repeat their edge sentences
                    seen.add(sentence)
                    candidates.append((index, heading, sentence))
        if not candidates:
            return hits
        scores = self._embed([s for _, _, s in candidates]) @ question_vector
        best = sorted(range(len(candidates)), key=lambda i: -scores[i])[: self.keep]
        groups: dict[int, list[int]] = {}
        for i in best:
            groups.setdefault(candidates[i][0], []).append(i)
        compressed = []
        for index, members in groups.items():  # dicts keep insertion order: best first
            heading = candidates[members[0]][1]
            text = " ".join(candidates[i][2] for i in members)
            chunk = replace(hits[index].chunk, text=f"{heading}\n{text}" if heading else text)
            compressed.append(Hit(chunk=chunk, score=float(scores[members[0]])))
        return compressed
