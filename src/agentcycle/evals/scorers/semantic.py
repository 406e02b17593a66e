"""Embedding similarity between the answer and the reference (MiniLM by default)."""

from __future__ import annotations

import threading

from agentcycle.evals.scoring import ScoreContext, scorer
from agentcycle.evals.types import Case, Output, Score

_lock = threading.Lock()


def embedding_similarity(embedder, answers: list[str], references: list[str]) -> list[float]:
    """Cosine similarity of each answer to its reference (normalized embeddings)."""
    if not answers:
        return []
    vectors_a = embedder.embed(answers)
    vectors_b = embedder.embed(references)
    return [float((a * b).sum()) for a, b in zip(vectors_a, vectors_b, strict=True)]


def get_embedder(ctx: ScoreContext):
    """The context's embedder, built once (the configured or bundled MiniLM) when unset."""
    if ctx.embedder is None:
        with _lock:
            if ctx.embedder is None:
                from agentcycle.models import Embedder, embedding_model_dir

                ctx.embedder = Embedder(embedding_model_dir(ctx.settings))
    return ctx.embedder


@scorer("similarity", threshold=0.7)
def similarity(case: Case, output: Output, ctx: ScoreContext, *,
               reference: str | None = None) -> Score:
    """Cosine similarity of the answer's and the reference's embeddings, clipped to [0, 1]."""
    from agentcycle.errors import ConfigError

    expected = reference if reference is not None else case.reference
    if expected is None:
        raise ConfigError(f"scorer 'similarity' needs a reference: case '{case.id}' has none")
    if not output.text.strip():
        return Score(value=0.0, passed=False, explanation="empty answer")
    value = embedding_similarity(get_embedder(ctx), [output.text], [expected])[0]
    value = min(1.0, max(0.0, value))
    return Score(value=value, passed=value >= 0.7, explanation=f"cosine similarity {value:.3f}")
