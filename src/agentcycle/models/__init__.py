"""Bundled chat and embedding models: locate, convert once, cache."""

from agentcycle.models.bundled import (
    BUNDLED_CHAT_NAME,
    bundled_embedding_dir,
    bundled_gguf_path,
    chat_model_dir,
    embedding_model_dir,
)
from agentcycle.models.embeddings import Embedder

__all__ = [
    "BUNDLED_CHAT_NAME",
    "Embedder",
    "bundled_embedding_dir",
    "bundled_gguf_path",
    "chat_model_dir",
    "embedding_model_dir",
]
