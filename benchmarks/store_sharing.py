"""The shared local vector store against today's long-lived client, side by side in one
run, on the same points and query vectors:

- per query, steady state: the old store (one QdrantClient(path=...) for the process's
  lifetime, which locks the folder: no other process can open it) against the shared
  store (a stat of the pointer, then an in-memory query), and the naive alternative
  (open the local client under a lock for every query);
- the first query after another process's ingest (the reload: the new version copied
  from its folder into memory), and a write of the collection (old vs new);
- the shared store's query while a second process queries the same collection in a
  loop (the old store refuses that second process: "already accessed").

Usage: python benchmarks/store_sharing.py [--points 1000 5000] [--queries 200]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DIM = 384  # MiniLM's
CHILD = """
import sys, numpy as np
from agentcycle.rag.local_store import LocalCollection
root, mode = sys.argv[1], sys.argv[2]
store = LocalCollection(root, "bench")
if mode == "ingest":
    from qdrant_client import models
    rng = np.random.default_rng(1)
    points = [models.PointStruct(id=i, vector=rng.random(384).tolist(),
              payload={"text": "x", "source": "new.md", "index": i, "heading": ""})
              for i in range(int(sys.argv[3]))]
    store.replace(points, 384)
else:
    print("ready", flush=True)
    q = np.random.default_rng(2).random(384).tolist()
    while True:
        store.query(q, 3)
"""


def _points(n: int, seed: int = 0):
    import numpy as np
    from qdrant_client import models

    rng = np.random.default_rng(seed)
    return [models.PointStruct(id=i, vector=rng.random(DIM).tolist(),
                               payload={"text": "chunk text " * 40, "source": f"d{i % 50}.md",
                                        "index": i, "heading": f"§ {i}"}) for i in range(n)]


def _per_query(fn, vectors) -> float:
    started = time.perf_counter()
    for v in vectors:
        fn(v)
    return (time.perf_counter() - started) / len(vectors) * 1000


def bench(n: int, queries: int, rounds: int = 5) -> dict:
    import numpy as np
    from filelock import FileLock
    from qdrant_client import QdrantClient, models

    from agentcycle.rag.local_store import _CACHE, LocalCollection

    work = Path(tempfile.mkdtemp(prefix="store-sharing-"))
    points = _points(n)
    vectors = np.random.default_rng(3).random((queries, DIM)).tolist()
    params = models.VectorParams(size=DIM, distance=models.Distance.COSINE)

    started = time.perf_counter()
    old = QdrantClient(path=str(work / "old"))  # today's store: one client per process
    old.create_collection("bench", vectors_config=params)
    for s in range(0, n, 256):
        old.upsert("bench", points=points[s : s + 256])
    old_write = time.perf_counter() - started
    started = time.perf_counter()
    shared = LocalCollection(work / "shared", "bench")
    shared.replace(points, DIM)
    new_write = time.perf_counter() - started

    def old_query(v):  # what ChunkStore.search did: exists, then query
        old.collection_exists("bench")
        return old.query_points("bench", query=v, limit=3).points

    def new_query(v):  # what ChunkStore.search does now: exists (stat), then query
        shared.exists()
        return shared.query(v, 3)

    naive_dir = work / "naive"
    shutil.copytree(work / "old", naive_dir)  # the same committed points, no client on it

    def naive_query(v):  # open the local client for each operation, under a lock
        with FileLock(work / "naive.lock"):
            client = QdrantClient(path=str(naive_dir))
            try:
                return client.query_points("bench", query=v, limit=3).points
            finally:
                client.close()

    samples: dict[str, list[float]] = {"old": [], "new": [], "naive": []}
    for _ in range(rounds):  # interleaved, so load from other processes hits all alike
        samples["old"].append(_per_query(old_query, vectors))
        samples["new"].append(_per_query(new_query, vectors))
        samples["naive"].append(_per_query(naive_query, vectors[: max(5, queries // 20)]))
    old.close()

    reloads = []
    for _ in range(3):  # another process ingests; this process's next query reloads
        subprocess.run([sys.executable, "-c", CHILD, str(work / "shared"), "ingest", str(n)],
                       check=True)
        started = time.perf_counter()
        assert new_query(vectors[0])[0].payload["source"] == "new.md"
        reloads.append((time.perf_counter() - started) * 1000)

    reader = subprocess.Popen([sys.executable, "-c", CHILD, str(work / "shared"), "read"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline().strip() == "ready"
        contended = [_per_query(new_query, vectors) for _ in range(rounds)]
    finally:
        reader.kill()
        reader.wait()
    _CACHE.clear()
    ms = {k: statistics.median(v) for k, v in samples.items()}
    return {"points": n, "old_ms": ms["old"], "new_ms": ms["new"], "naive_ms": ms["naive"],
            "new_over_old": ms["new"] / ms["old"], "naive_over_old": ms["naive"] / ms["old"],
            "reload_ms": statistics.median(reloads),
            "new_with_second_process_ms": statistics.median(contended),
            "old_write_s": old_write, "new_write_s": new_write}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    from rich.console import Console
    from rich.table import Table

    results = [bench(n, args.queries) for n in args.points]
    table = Table(title="shared local store vs today's long-lived client (ms per query)")
    for column in ("points", "old", "shared", "shared/old", "open per query", "naive/old",
                   "reload after ingest", "shared, 2nd process querying", "write old/new s"):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(str(r["points"]), f"{r['old_ms']:.2f}", f"{r['new_ms']:.2f}",
                      f"{r['new_over_old']:.2f}x", f"{r['naive_ms']:.1f}",
                      f"{r['naive_over_old']:.0f}x", f"{r['reload_ms']:.0f}",
                      f"{r['new_with_second_process_ms']:.2f}",
                      f"{r['old_write_s']:.1f} / {r['new_write_s']:.1f}")
    Console().print(table)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
