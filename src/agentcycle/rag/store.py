"""A Qdrant collection of chunks: local mode on disk, or the platform's server.

Both paths behave the same for users: any number of processes read and ingest at once,
and an ingest switches readers to the new chunks only once they are all written (a
killed ingest leaves the previous collection answering). On a Qdrant server
(``QDRANT_URL``) the name users give is an *alias* moved atomically to each new versioned
collection; in local mode, :mod:`agentcycle.rag.local_store` keeps versions in folders
of their own behind a pointer file.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agentcycle.errors import DataError, ServiceError
from agentcycle.rag.documents import Chunk
from agentcycle.rag.local_store import LocalCollection, new_version
from agentcycle.settings import Settings

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_VERSION_SEP = "__v"
_BATCH = 256


def qdrant_client(settings: Settings):
    """A client of the platform's Qdrant server (``QDRANT_URL``)."""
    from qdrant_client import QdrantClient

    if not settings.qdrant_url:
        raise ServiceError("QDRANT_URL is not set: the local store needs no client "
                           "(ChunkStore opens it per operation)")
    return QdrantClient(url=settings.qdrant_url, api_key=settings.qdrant_api_key, timeout=10)


@dataclass(frozen=True)
class Hit:
    chunk: Chunk
    score: float


class ServerCollection:
    """One collection on a Qdrant server: an alias over versioned collections."""

    def __init__(self, client: Any, name: str):
        self.client, self.name = client, name
        self._version = re.compile(re.escape(name + _VERSION_SEP) + r"(\d{13}-[0-9a-f]{8})")

    def _alias_target(self) -> str | None:
        aliases = self.client.get_aliases().aliases
        return next((a.collection_name for a in aliases if a.alias_name == self.name), None)

    def exists(self) -> bool:
        return self.client.collection_exists(self.name) or self._alias_target() is not None

    def count(self) -> int:
        return self.client.count(self.name).count

    def query(self, vector: list[float], limit: int) -> list:
        return self.client.query_points(self.name, query=vector, limit=limit).points

    def replace(self, points: list, dim: int,
                progress: Callable[[int, int], None] | None = None) -> str:
        from qdrant_client import models

        target = f"{self.name}{_VERSION_SEP}{new_version()}"
        self.client.create_collection(target, vectors_config=models.VectorParams(
            size=dim, distance=models.Distance.COSINE))
        try:
            for start in range(0, len(points), _BATCH):
                self.client.upsert(target, points=points[start : start + _BATCH])
                if progress:
                    progress(min(start + _BATCH, len(points)), len(points))
        except BaseException:  # an error or Ctrl-C: the unswitched version goes now
            with contextlib.suppress(Exception):
                self.client.delete_collection(target)
            raise
        current = self._alias_target()
        switch: list = []
        if current is not None:
            switch.append(models.DeleteAliasOperation(
                delete_alias=models.DeleteAlias(alias_name=self.name)))
        elif self.client.collection_exists(self.name):
            # A collection from before versioning holds the name: it goes, once.
            self.client.delete_collection(self.name)
        switch.append(models.CreateAliasOperation(create_alias=models.CreateAlias(
            collection_name=target, alias_name=self.name)))
        self.client.update_collection_aliases(change_aliases_operations=switch)  # atomic
        self._cleanup(target)
        return target

    def _cleanup(self, keep: str) -> None:
        """Delete older versions (the previous one, killed ingests); newer ones may be
        another ingest still writing."""
        for collection in self.client.get_collections().collections:
            if self._version.fullmatch(collection.name) and collection.name < keep:
                self.client.delete_collection(collection.name)


class ChunkStore:
    """Ingest (replace) and search chunks with their source metadata.

    ``server`` is a Qdrant client to use as the platform's server; by default one is
    made from ``QDRANT_URL`` when it is set, else the shared local store is used.
    """

    def __init__(self, settings: Settings, collection: str, *, server: Any = None):
        if not _NAME.fullmatch(collection):
            raise DataError(f"invalid collection name '{collection}': use letters, digits, "
                            "'-', '_' and '.', starting with a letter or digit (<= 100)")
        self.collection = collection
        if server is not None or settings.qdrant_url:
            self.location = settings.qdrant_url or "the given Qdrant client"
            self._backend: Any = ServerCollection(server or qdrant_client(settings), collection)
        else:
            self.location = str(settings.qdrant_path)
            self._backend = LocalCollection(settings.qdrant_path, collection)

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except OSError as exc:
            if isinstance(self._backend, LocalCollection):  # a disk full, a folder read-only
                raise ServiceError(f"the local Qdrant store at {self.location} failed: "
                                   f"{exc}") from None
            raise ServiceError(f"Qdrant at {self.location} is unreachable: {exc}") from None
        except Exception as exc:  # qdrant_client wraps httpx errors in its own types
            if "connect" in str(exc).lower():
                raise ServiceError(f"Qdrant at {self.location} is unreachable: {exc}") from None
            raise

    def exists(self) -> bool:
        return bool(self._call(self._backend.exists))

    def replace(self, chunks: list[Chunk], vectors,
                progress: Callable[[int, int], None] | None = None) -> int:
        """Make the collection exactly these chunks: written as a new version, switched
        to when complete, older versions deleted. Readers see the old chunks until then."""
        from qdrant_client import models

        if not chunks:
            raise DataError(f"nothing to write into collection '{self.collection}': no chunks")
        points = [
            models.PointStruct(
                id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{c.source}#{c.index}")),
                vector=list(map(float, v)),
                payload={"text": c.text, "source": c.source, "index": c.index,
                         "heading": c.heading},
            )
            for c, v in zip(chunks, vectors, strict=True)
        ]
        self._call(self._backend.replace, points, len(points[0].vector), progress)
        return len(points)

    def count(self) -> int:
        self.require()
        return self._call(self._backend.count)

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
        points = self._call(self._backend.query, list(map(float, vector)), top_k)
        return [
            Hit(
                Chunk(
                    text=p.payload["text"], source=p.payload["source"],
                    index=p.payload["index"], heading=p.payload.get("heading", ""),
                ),
                float(p.score),
            )
            for p in points
        ]
