"""A Qdrant collection of chunks: local mode on disk, or the platform's server."""

from __future__ import annotations

import atexit
import functools
import uuid
from dataclasses import dataclass

from agentcycle.errors import DataError, ServiceError
from agentcycle.rag.documents import Chunk
from agentcycle.settings import Settings


@functools.lru_cache(maxsize=8)
def _local_client(path: str):
    from qdrant_client import QdrantClient

    # Local mode locks its folder: one client per process, shared by everyone in it.
    client = QdrantClient(path=path)
    # Closed before interpreter shutdown: its __del__ fails noisily once modules are gone.
    atexit.register(client.close)
    return client


def qdrant_client(settings: Settings):
    from qdrant_client import QdrantClient

    if settings.qdrant_url:
        return QdrantClient(url=settings.qdrant_url, api_key=settings.qdrant_api_key, timeout=10)
    settings.qdrant_path.mkdir(parents=True, exist_ok=True)
    try:
        return _local_client(str(settings.qdrant_path))
    except RuntimeError as exc:  # "Storage folder ... is already accessed by another instance"
        raise ServiceError(f"the local Qdrant store is busy: {exc}") from None


@dataclass(frozen=True)
class Hit:
    chunk: Chunk
    score: float


class ChunkStore:
    """Upsert and search chunks with their source metadata."""

    def __init__(self, settings: Settings, collection: str):
        self.client = qdrant_client(settings)
        self.collection = collection
        self.location = settings.qdrant_url or str(settings.qdrant_path)

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ConnectionError, OSError) as exc:
            raise ServiceError(f"Qdrant at {self.location} is unreachable: {exc}") from None
        except Exception as exc:  # qdrant_client wraps httpx errors in its own types
            if "connect" in str(exc).lower():
                raise ServiceError(f"Qdrant at {self.location} is unreachable: {exc}") from None
            raise

    def exists(self) -> bool:
        return bool(self._call(self.client.collection_exists, self.collection))

    def replace(self, chunks: list[Chunk], vectors) -> int:
        """Recreate the collection with exactly these chunks."""
        from qdrant_client import models

        if self.exists():
            self._call(self.client.delete_collection, self.collection)
        self._call(
            self.client.create_collection,
            self.collection,
            vectors_config=models.VectorParams(size=len(vectors[0]),
                                               distance=models.Distance.COSINE),
        )
        points = [
            models.PointStruct(
                id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{c.source}#{c.index}")),
                vector=list(map(float, v)),
                payload={"text": c.text, "source": c.source, "index": c.index,
                         "heading": c.heading},
            )
            for c, v in zip(chunks, vectors, strict=True)
        ]
        for start in range(0, len(points), 256):
            self._call(self.client.upsert, self.collection, points=points[start : start + 256])
        return len(points)

    def count(self) -> int:
        return self._call(self.client.count, self.collection).count

    def require(self) -> ChunkStore:
        """This store, or a DataError telling how to create the collection."""
        if not self.exists():
            raise DataError(
                f"collection '{self.collection}' does not exist: run "
                f"`agentcycle rag ingest DIR --collection {self.collection}` first"
            )
        return self

    def search(self, vector, top_k: int = 3) -> list[Hit]:
        self.require()
        result = self._call(
            self.client.query_points, self.collection, query=list(map(float, vector)), limit=top_k
        )
        return [
            Hit(
                Chunk(
                    text=p.payload["text"], source=p.payload["source"],
                    index=p.payload["index"], heading=p.payload.get("heading", ""),
                ),
                float(p.score),
            )
            for p in result.points
        ]
