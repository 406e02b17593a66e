"""Prototype phase: a RAG agent over a folder of documents."""

from agentcycle.models.embeddings import Embedder
from agentcycle.rag.agent import Answer, RagAgent, Source
from agentcycle.rag.documents import Chunk, Document, load_documents, split_documents
from agentcycle.rag.ingest import IngestReport, ingest
from agentcycle.rag.prompt import SYSTEM_PROMPT, build_messages
from agentcycle.rag.retriever import Retriever
from agentcycle.rag.store import ChunkStore, Hit

__all__ = [
    "SYSTEM_PROMPT", "Answer", "Chunk", "ChunkStore", "Document", "Embedder", "Hit",
    "IngestReport", "RagAgent", "Retriever", "Source", "build_messages", "ingest",
    "load_documents",
    "split_documents",
]
