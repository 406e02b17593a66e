"""Eval runner throughput: a 200-case suite against the local model server (the bundled
model behind our key gate), at concurrency 8 and sequentially, in one run.

    flock /tmp/bench.lock .venv/bin/python benchmarks/eval_throughput.py [--cases 200]

Cases are the legal example's questions (train, validation, test; cycled to reach the
count), asked directly of the model (no retrieval) with ``max_tokens`` 32, no cache.
Prints cases/s for each mode and the ratio; results go in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def build_suite(count: int):
    from agentcycle.evals import Case, Suite
    from agentcycle.examples import legal_split
    from agentcycle.finetune import read_jsonl

    splits = ("train", "validation", "test")
    records = [r for split in splits for r in read_jsonl(legal_split(split))]
    cases = [Case(id=f"c{i}", input=records[i % len(records)]["question"]
                  + ("" if i < len(records) else f" (variant {i // len(records)})"),
                  keywords=records[i % len(records)].get("keywords", []))
             for i in range(count)]
    return Suite(name=f"throughput-{count}", cases=cases, scorers=["keywords"])


def measure(suite, target, concurrency: int) -> tuple[float, float, int]:
    from agentcycle.evals.runner import run_suite_sync

    started = time.perf_counter()
    run = run_suite_sync(suite, target, concurrency=concurrency, retries=0, cache=None)
    seconds = time.perf_counter() - started
    return seconds, run.metric("p50_latency_ms"), int(run.metric("errors"))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    # A kill (timeout, Ctrl-C from a wrapper) must still stop the model server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.environ["AGENTCYCLE_HOME"] = tempfile.mkdtemp(prefix="agentcycle-bench-")
    os.environ.setdefault("AGENTCYCLE_CACHE", str(REPO / ".agentcycle" / "models"))
    from agentcycle.cli._common import quiet_libraries

    quiet_libraries()
    from agentcycle.evals import OpenAITarget
    from agentcycle.models import chat_model_dir
    from agentcycle.serving import ModelServer
    from agentcycle.settings import Settings

    suite = build_suite(args.cases)
    with ModelServer(chat_model_dir(Settings()), api_key="bench", model_name="base") as server:
        target = OpenAITarget(server.base_url, "base", "bench", max_tokens=args.max_tokens)
        rows = []
        # Concurrent first, then sequential: neither gets a warmer engine than the other
        # (the server's start-up already sent a warm-up request).
        for concurrency in (args.concurrency, 1):
            seconds, p50, errors = measure(suite, target, concurrency)
            rows.append((concurrency, seconds, p50, errors))
            print(f"concurrency {concurrency}: {args.cases} cases in {seconds:.1f} s = "
                  f"{args.cases / seconds:.2f} cases/s (p50 latency {p50:.0f} ms, "
                  f"{errors} errors)", flush=True)
    (_, fast, _, _), (_, slow, _, _) = rows
    print(f"speed-up at concurrency {args.concurrency}: {slow / fast:.2f}x "
          f"({args.cases / fast:.2f} vs {args.cases / slow:.2f} cases/s)")
    print(f"load average during the run: {statistics.fmean(os.getloadavg()):.1f} on "
          f"{os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
