"""Sentence embeddings with the bundled MiniLM (or any sentence-transformers dir)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np


@functools.lru_cache(maxsize=4)
def _load(path: str):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, device="cpu", local_files_only=True)


class Embedder:
    """Normalized embeddings, so a dot product is the cosine similarity."""

    def __init__(self, model_dir: str | Path):
        self.model_dir = str(model_dir)
        self._model = _load(self.model_dir)

    @property
    def dimension(self) -> int:
        return int(self._model.get_sentence_embedding_dimension())

    def embed(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        return self._model.encode(
            texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
            show_progress_bar=False,
        )

    def similarity(self, a: str, b: str) -> float:
        va, vb = self.embed([a, b])
        return float(np.dot(va, vb))
