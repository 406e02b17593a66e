"""Qdrant local mode shared by every process on one data directory.

qdrant-client's local mode locks its folder for the client's whole lifetime, so a second
process (the app and the CLI; two apps) could not open it. Here each ingest writes a new
*version* of a collection into a folder of its own (a plain Qdrant local store), and a
pointer file, replaced atomically, names the complete version. So:

- a reader loads the current version once (opening its folder under a short
  cross-process lock, copying the points into an in-memory Qdrant client) and answers
  from memory; before each query it ``stat``\\s the pointer, and reloads only when another
  process switched it: another process's ingest is seen by the next query;
- a writer never holds what readers need: it fills its own folder, then takes the lock
  only to switch the pointer and delete old versions. A writer killed mid-ingest leaves
  the pointer (and every reader) on the previous version; its folder is deleted by the
  next ingest.

Qdrant's aliases work in local mode too (within one folder); they are the switch on a
Qdrant server (``store.py``). Locally the versions live in separate folders, so that a
writer never locks the folder readers load from and a load reads only one version:
there the pointer is the switch.

Layout under the Qdrant folder: ``collections/NAME/CURRENT`` (JSON: version, points,
dim), ``collections/NAME/VERSION/`` (a Qdrant local store holding collection NAME, and
``WRITING``, locked by its writer until the switch), ``collections/NAME/.lock``. A
collection in the layout of earlier versions (the whole folder one Qdrant store) is
copied into it on first use.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentcycle.errors import ServiceError

LOCK_TIMEOUT_S = 120.0  # a load or a switch holds the lock for seconds at most
_SCROLL_PAGE = 1024
_BATCH = 256


def new_version() -> str:
    """Sortable by creation time, unique across processes."""
    return f"{time.time_ns() // 1_000_000:013d}-{uuid.uuid4().hex[:8]}"


@dataclass
class _Loaded:
    version: str
    key: tuple[int, int, int]  # (inode, mtime_ns, size) of the pointer it was read from
    client: Any  # an in-memory QdrantClient holding this version's points
    points: int


_CACHE: dict[Path, _Loaded] = {}
_CACHE_LOCK = threading.Lock()
_LOAD_LOCKS: dict[Path, threading.Lock] = {}


class LocalCollection:
    """One collection in the shared local store: ``replace`` writes, ``query`` reads."""

    def __init__(self, qdrant_path: Path, name: str):
        self.name = name
        self.root = Path(qdrant_path) / "collections" / name
        self.pointer = self.root / "CURRENT"

    # --- reading ----------------------------------------------------------------------

    def current(self) -> dict | None:
        """The pointer's content (version, points, dim), or None before the first ingest."""
        try:
            pointer = json.loads(self.pointer.read_text())
        except FileNotFoundError:
            return None
        except ValueError:  # written atomically: only a hand edit gets here
            pointer = None
        if not isinstance(pointer, dict) or not isinstance(pointer.get("version"), str):
            raise ServiceError(f"{self.pointer} is unreadable: delete {self.root} and run "
                               f"`agentcycle rag ingest DIR --collection {self.name}` again")
        return pointer

    def exists(self) -> bool:
        return self.pointer.exists() or self._migrate_legacy()

    def _migrate_legacy(self) -> bool:
        """A collection from before versioning (one Qdrant folder, one process) becomes
        this collection's first version; the old folder is left as it was."""
        from qdrant_client import QdrantClient

        legacy = self.root.parent.parent
        try:
            if self.name not in json.loads((legacy / "meta.json").read_text())["collections"]:
                return False
        except (FileNotFoundError, ValueError, KeyError):
            return False
        try:
            client = QdrantClient(path=str(legacy))
        except RuntimeError:
            raise ServiceError(
                f"collection '{self.name}' is in {legacy}, which an older agentcycle process "
                "holds open: stop it and retry (the collection then moves to the shared "
                "store once)") from None
        try:
            points, dim = _read_points(client, self.name)
        finally:
            client.close()
        if not self.pointer.exists():  # another process may have migrated it meanwhile
            self.replace(points, dim)
        return True

    def count(self) -> int:
        pointer = self.current()
        return pointer["points"] if pointer else 0

    def query(self, vector: Sequence[float], limit: int) -> list:
        loaded = self._loaded()
        return loaded.client.query_points(self.name, query=list(vector), limit=limit).points

    def _loaded(self) -> _Loaded:
        """The current version in memory: a stat of the pointer when nothing changed."""
        key = _stat_key(self.pointer)
        with _CACHE_LOCK:
            loaded = _CACHE.get(self.root)
            load_lock = _LOAD_LOCKS.setdefault(self.root, threading.Lock())
        if loaded is not None and loaded.key == key:
            return loaded
        with load_lock:  # one thread loads, the others wait for its copy
            with _CACHE_LOCK:
                loaded = _CACHE.get(self.root)
            if loaded is not None and loaded.key == _stat_key(self.pointer):
                return loaded
            with self._lock():
                key = _stat_key(self.pointer)
                pointer = self.current()
                if pointer is None:
                    raise ServiceError(f"collection '{self.name}' vanished from {self.root}")
                if loaded is not None and loaded.version == pointer["version"]:
                    loaded.key = key  # rewritten with the same version: nothing to load
                    return loaded
                client, points = _load_version(self.root / pointer["version"], self.name)
            loaded = _Loaded(pointer["version"], key, client, points)
            with _CACHE_LOCK:
                _CACHE[self.root] = loaded
            return loaded

    # --- writing ----------------------------------------------------------------------

    def replace(self, points: list, dim: int,
                progress: Callable[[int, int], None] | None = None) -> str:
        """Write ``points`` as a new version, then switch readers to it; returns it."""
        from filelock import FileLock
        from qdrant_client import QdrantClient, models

        version = new_version()
        folder = self.root / version
        folder.mkdir(parents=True)
        with FileLock(folder / "WRITING"):  # held until the switch: cleanup leaves it alone
            client = QdrantClient(path=str(folder))
            try:
                client.create_collection(self.name, vectors_config=models.VectorParams(
                    size=dim, distance=models.Distance.COSINE))
                _unsynced_commits(client, self.name)
                for start in range(0, len(points), _BATCH):
                    client.upsert(self.name, points=points[start : start + _BATCH])
                    if progress:
                        progress(min(start + _BATCH, len(points)), len(points))
            except BaseException:  # an error or Ctrl-C: the unswitched version goes now
                client.close()
                shutil.rmtree(folder, ignore_errors=True)
                raise
            client.close()
            _fsync_tree(folder)  # on disk before any reader can be pointed at it
            with self._lock():
                _write_pointer(self.pointer, {"version": version, "points": len(points),
                                              "dim": dim})
                key = _stat_key(self.pointer)
                self._cleanup(keep=version)
        # This process has the points at hand: its next query needs no load from disk.
        with _CACHE_LOCK:
            _CACHE[self.root] = _Loaded(version, key, _in_memory(self.name, points, dim),
                                        len(points))
        return version

    def _cleanup(self, keep: str) -> None:
        """Delete every version but ``keep`` whose writer is gone (finished or killed).
        Runs under the collection lock, so no reader is loading the folders it deletes."""
        from filelock import FileLock, Timeout

        for folder in self.root.iterdir():
            if not folder.is_dir() or folder.name == keep:
                continue
            try:
                FileLock(folder / "WRITING").acquire(timeout=0).lock.release()
            except Timeout:
                continue  # another ingest is still writing it
            shutil.rmtree(folder, ignore_errors=True)

    def _lock(self):
        from filelock import FileLock, Timeout

        self.root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.root / ".lock")
        try:
            return lock.acquire(timeout=LOCK_TIMEOUT_S)
        except Timeout:
            raise ServiceError(
                f"the local Qdrant collection '{self.name}' is busy: another process held "
                f"{self.root / '.lock'} for over {LOCK_TIMEOUT_S:.0f} s; if it hangs, stop "
                "it, or set QDRANT_URL to use a Qdrant server") from None


def _stat_key(path: Path) -> tuple[int, int, int]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return (0, 0, 0)
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _write_pointer(path: Path, content: dict) -> None:
    """Complete or absent, never half-written: write aside, flush, rename over."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(content))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself survives a crash
    finally:
        os.close(fd)


def _unsynced_commits(client: Any, name: str) -> None:
    """Local mode commits (and fsyncs) its SQLite file once per point: 20 ms a point on
    a busy disk. A version's folder is private until the switch, which comes after
    :func:`_fsync_tree`, so its writer skips the per-point fsync (a crash before the
    switch loses only the unswitched version). Left as is if qdrant-client's internals
    differ from 1.x's."""
    storage = getattr(getattr(getattr(client, "_client", None), "collections", {}).get(name),
                      "storage", None)
    connection = getattr(storage, "storage", None)
    if connection is not None and hasattr(connection, "execute"):
        connection.execute("PRAGMA synchronous=OFF")


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*"), reverse=True) + [folder]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _load_version(folder: Path, name: str) -> tuple[Any, int]:
    """Copy one version from its folder into an in-memory client (the folder is opened
    only for the copy, so its Qdrant lock is free again at once)."""
    from qdrant_client import QdrantClient

    if not (folder / "meta.json").exists():
        raise ServiceError(f"the current version of collection '{name}' is missing: "
                           f"{folder}; run `agentcycle rag ingest` again")
    disk = QdrantClient(path=str(folder))
    try:
        points, dim = _read_points(disk, name)
    finally:
        disk.close()
    return _in_memory(name, points, dim), len(points)


def _read_points(client: Any, name: str) -> tuple[list, int]:
    from qdrant_client import models

    dim = client.get_collection(name).config.params.vectors.size
    points, offset = [], None
    while True:
        records, offset = client.scroll(name, limit=_SCROLL_PAGE, offset=offset,
                                        with_payload=True, with_vectors=True)
        points.extend(models.PointStruct(id=r.id, vector=r.vector, payload=r.payload)
                      for r in records)
        if offset is None:
            return points, dim


def _in_memory(name: str, points: list, dim: int):
    from qdrant_client import QdrantClient, models

    client = QdrantClient(":memory:")
    client.create_collection(name, vectors_config=models.VectorParams(
        size=dim, distance=models.Distance.COSINE))
    for start in range(0, len(points), _BATCH * 8):
        client.upsert(name, points=points[start : start + _BATCH * 8])
    return client
