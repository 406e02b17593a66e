"""The vector store shared by several processes on one data dir, and ingests that switch
readers over only when complete (issue 11: items 2 and 5's ingest).

Real processes on one AGENTCYCLE_HOME: a child holding the store open and answering in a
loop while this process ingests and asks; a child SIGKILLed in the middle of writing a
large ingest. The Qdrant-server path (aliases) runs on a real qdrant-client whose local
mode implements the same alias operations (no Qdrant server binary installs here).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from agentcycle.errors import DataError, ServiceError
from agentcycle.rag import Chunk, ChunkStore, ingest
from agentcycle.rag.local_store import LocalCollection

# Answers each line of stdin: "search COLLECTION QUESTION" or "ingest COLLECTION DIR".
SERVE = textwrap.dedent("""
    import json, sys
    from agentcycle.models import bundled_embedding_dir
    from agentcycle.rag import ChunkStore, Embedder, ingest
    from agentcycle.settings import Settings

    embedder, settings = Embedder(bundled_embedding_dir()), Settings()
    print("ready", flush=True)
    for line in sys.stdin:
        verb, collection, arg = line.rstrip("\\n").split(" ", 2)
        if verb == "ingest":
            report = ingest(arg, collection, settings, embedder=embedder)
            print(json.dumps({"chunks": report.chunks}), flush=True)
        else:
            store = ChunkStore(settings, collection)
            hits = store.search(embedder.embed([arg])[0], 3)
            print(json.dumps({"count": store.count(), "sources": [h.chunk.source for h in hits]}),
                  flush=True)
""")

# Ingests a folder and stops (SIGSTOP-free: it sleeps) once the first batch is written.
KILLED_INGEST = textwrap.dedent("""
    import sys, time
    from agentcycle.rag import ingest

    def written(done, total):
        print(f"written {done}/{total}", flush=True)
        time.sleep(600)  # the parent SIGKILLs us here, in the middle of the write

    ingest(sys.argv[1], sys.argv[2], write_progress=written)
""")

# A fresh process's view: the collection's count and the top source for a given vector.
FRESH_READ = textwrap.dedent("""
    import json, sys
    from agentcycle.rag import ChunkStore
    from agentcycle.settings import Settings

    store = ChunkStore(Settings(), sys.argv[1])
    hits = store.search(json.loads(sys.argv[2]), 1)
    print(json.dumps({"count": store.count(), "source": hits[0].chunk.source}))
""")


def _corpus(folder: Path, name: str, topic: str, sections: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    body = "\n\n".join(f"## § {i}. {topic.title()} rule {i}\nThe {topic} rule {i} says a tenant "
                       f"pays {i} crowns for {topic}." for i in range(1, sections + 1))
    (folder / name).write_text(f"# {topic}\n\n{body}\n")
    return folder


class _Child:
    """A Python child speaking the line protocol of SERVE."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", SERVE], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready", self.proc.stderr.read()

    def ask(self, line: str) -> dict:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        assert answer, self.proc.stderr.read()
        return json.loads(answer)

    def close(self) -> str:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        errors = self.proc.stderr.read()
        assert self.proc.returncode == 0, errors
        return errors


@pytest.mark.slow
def test_two_processes_read_and_ingest_one_data_dir(settings, embedder, tmp_path):
    ingest(_corpus(tmp_path / "v1", "deposits.md", "deposit"), "law", settings,
           embedder=embedder)
    child = _Child()  # holds the store open from here on, as an app would
    try:
        assert child.ask("search law deposit")["sources"][0] == "deposits.md"
        # The other process ingests while this one has the store open, and vice versa.
        assert child.ask(f"ingest notes {_corpus(tmp_path / 'n', 'pets.md', 'pet')}")["chunks"] == 3
        store = ChunkStore(settings, "notes")
        assert store.search(embedder.embed(["pet"])[0], 1)[0].chunk.source == "pets.md"
        ingest(_corpus(tmp_path / "v2", "repairs.md", "repair", sections=5), "law", settings,
               embedder=embedder)
        assert ChunkStore(settings, "law").search(embedder.embed(["repair"])[0], 1)[0] \
            .chunk.source == "repairs.md"
        # The child's next query sees this process's ingest: new chunks, new count.
        assert child.ask("search law repair") == {"count": 5, "sources": ["repairs.md"] * 3}
        # Both write the same collection in turn; each sees the other's last version.
        child.ask(f"ingest law {tmp_path / 'v1'}")
        assert ChunkStore(settings, "law").count() == 3
    finally:
        errors = child.close()
    assert "Traceback" not in errors and "busy" not in errors
    versions = [p for p in (settings.qdrant_path / "collections" / "law").iterdir() if p.is_dir()]
    assert len(versions) == 1  # old versions are deleted by the ingest that replaced them


@pytest.mark.slow
def test_a_killed_ingest_leaves_the_previous_collection_answering(settings, embedder,
                                                                  tmp_path):
    old = ingest(_corpus(tmp_path / "old", "deposits.md", "deposit"), "law", settings,
                 embedder=embedder)
    large = tmp_path / "large"
    for doc in range(20):  # 520 chunks: three batches to write, killed after the first
        _corpus(large, f"generated-{doc:02d}.md", f"topic{doc}", sections=26)
    child = subprocess.Popen([sys.executable, "-c", KILLED_INGEST, str(large), "law"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()
        assert line.startswith("written 256/520"), line + child.stderr.read()
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    root = settings.qdrant_path / "collections" / "law"
    current = LocalCollection(settings.qdrant_path, "law").current()["version"]
    orphans = [p for p in root.iterdir() if p.is_dir() and p.name != current]
    assert len(orphans) == 1  # the killed ingest's half-written version, never switched to

    # A fresh process (as after a crash) still answers from the previous collection.
    vector = json.dumps([float(x) for x in embedder.embed(["deposit"])[0]])
    fresh = subprocess.run([sys.executable, "-c", FRESH_READ, "law", vector],
                           capture_output=True, text=True, timeout=120)
    assert fresh.returncode == 0, fresh.stderr
    assert json.loads(fresh.stdout) == {"count": old.chunks, "source": "deposits.md"}
    assert ChunkStore(settings, "law").count() == old.chunks

    # The next ingest succeeds and deletes the killed one's folder with the old version.
    ingest(_corpus(tmp_path / "new", "repairs.md", "repair"), "law", settings,
           embedder=embedder)
    assert [p.name for p in root.iterdir() if p.is_dir()] == [
        LocalCollection(settings.qdrant_path, "law").current()["version"]]


def _chunks(tag: str, n: int) -> tuple[list[Chunk], list[list[float]]]:
    chunks = [Chunk(text=f"{tag} {i}", source=f"{tag}.md", index=i, heading=f"§ {i}")
              for i in range(n)]
    vectors = [[1.0 if j == i % 8 else 0.1 for j in range(8)] for i in range(n)]
    return chunks, vectors


def _top(store: ChunkStore) -> str:
    return store.search([1.0] + [0.1] * 7, 1)[0].chunk.source


def test_concurrent_ingests_of_one_collection_leave_one_complete_version(settings):
    def write(tag: str, n: int) -> None:
        ChunkStore(settings, "c").replace(*_chunks(tag, n))

    threads = [threading.Thread(target=write, args=(tag, n))
               for tag, n in (("a", 300), ("b", 600), ("c", 40))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store = ChunkStore(settings, "c")
    winner = _top(store)
    assert store.count() == {"a.md": 300, "b.md": 600, "c.md": 40}[winner]
    root = settings.qdrant_path / "collections" / "c"
    # The last to switch deleted every version whose writer had finished.
    assert len([p for p in root.iterdir() if p.is_dir()]) == 1


def test_an_interrupted_ingest_deletes_its_version_at_once(settings):
    store = ChunkStore(settings, "c")
    store.replace(*_chunks("one", 10))

    def interrupted(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.replace(*_chunks("two", 600), progress=interrupted)
    assert store.count() == 10 and _top(store) == "one.md"
    root = settings.qdrant_path / "collections" / "c"
    assert len([p for p in root.iterdir() if p.is_dir()]) == 1


def test_server_path_switches_an_alias_and_keeps_the_old_version_on_failure(settings, tmp_path):
    from qdrant_client import QdrantClient, models

    server = QdrantClient(path=str(tmp_path / "server"))
    try:
        # A collection from before versioning holds the name: the first ingest replaces it.
        server.create_collection("law", vectors_config=models.VectorParams(
            size=8, distance=models.Distance.COSINE))
        store = ChunkStore(settings, "law", server=server)
        assert store.exists() and store.count() == 0
        store.replace(*_chunks("one", 20))
        first = {a.alias_name: a.collection_name for a in server.get_aliases().aliases}["law"]
        assert first.startswith("law__v") and store.count() == 20

        def interrupted(done: int, total: int) -> None:
            raise KeyboardInterrupt  # stopped after the first batch of the new version

        with pytest.raises(KeyboardInterrupt):
            store.replace(*_chunks("two", 600), progress=interrupted)
        assert store.count() == 20 and _top(store) == "one.md"
        assert [c.name for c in server.get_collections().collections] == [first]
        # What a killed ingest leaves (an older, unswitched version) goes with the next one.
        server.create_collection("law__v0000000000001-0123abcd", vectors_config=models.VectorParams(
            size=8, distance=models.Distance.COSINE))

        store.replace(*_chunks("three", 5))
        names = [c.name for c in server.get_collections().collections]
        assert len(names) == 1 and names[0] != first
        assert store.count() == 5 and _top(store) == "three.md"
        assert not ChunkStore(settings, "other", server=server).exists()
    finally:
        server.close()


def test_bad_names_and_missing_collections_are_one_clear_error(settings):
    with pytest.raises(DataError, match="invalid collection name '../x'"):
        ChunkStore(settings, "../x")
    with pytest.raises(DataError, match="does not exist: run `agentcycle rag ingest"):
        ChunkStore(settings, "nothing").search([0.1] * 8)
    with pytest.raises(DataError, match="nothing to write"):
        ChunkStore(settings, "c").replace([], [])
    ChunkStore(settings, "c").replace(*_chunks("one", 3))
    (settings.qdrant_path / "collections" / "c" / "CURRENT").write_text("{half")
    with pytest.raises(ServiceError, match="CURRENT is unreadable: delete .* and run"):
        ChunkStore(settings, "c").count()


def test_a_collection_from_before_versioning_moves_to_the_shared_store_once(settings):
    from qdrant_client import QdrantClient, models

    chunks, vectors = _chunks("old", 30)
    legacy = QdrantClient(path=str(settings.qdrant_path))  # the layout agentcycle used to write
    legacy.create_collection("law", vectors_config=models.VectorParams(
        size=8, distance=models.Distance.COSINE))
    legacy.upsert("law", points=[
        models.PointStruct(id=i, vector=v, payload={"text": c.text, "source": c.source,
                                                    "index": c.index, "heading": c.heading})
        for i, (c, v) in enumerate(zip(chunks, vectors, strict=True))])
    with pytest.raises(ServiceError, match="an older agentcycle process holds open"):
        ChunkStore(settings, "law").exists()
    legacy.close()
    store = ChunkStore(settings, "law")
    assert store.exists() and store.count() == 30 and _top(store) == "old.md"
    assert (settings.qdrant_path / "collection" / "law").is_dir()  # left as it was
    assert not ChunkStore(settings, "other").exists()
