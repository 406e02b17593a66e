"""Several prompts at once against one after another, on the CPU engine (transformers
serve with continuous batching), with and without a cap on the tokens per step.

    flock /tmp/bench.lock .venv/bin/python benchmarks/engine_batching.py [--short]

Long (default): four distinct ~1.9K-token prompts (a tool agent's schemas are ~1.4K),
48 tokens each at most. --short: eight ~115-token prompts, 32 tokens each. Each engine
setting serves the bundled model: one warm-up request, the prompts one after another,
then the same number of other prompts at once. Prints the wall times and the ratio
concurrent / sequential (below 1: batching pays). Results go in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / ".agentcycle" / "models" / "SmolLM2-135M-Instruct"
BASE = ["--continuous-batching", "--cb-block-size", "256", "--cb-num-blocks", "64"]
SETTINGS = {"no cap (before)": BASE, "256 tokens a step (ours)": BASE + [
    "--cb-max-batch-tokens", "256"]}


def _prompt(i: int, clauses: int) -> str:
    return f"Document {i}. " + " ".join(f"Clause {i}.{j}: the party must act within "
                                        f"{j + i} days." for j in range(clauses))


def measure(options: list[str], count: int, clauses: int, max_tokens: int) -> tuple:
    from agentcycle.serving.server import free_port, wait_for_health

    port = free_port()
    engine = subprocess.Popen([sys.executable, "-m", "transformers.cli.transformers", "serve",
                               str(MODEL), "--port", str(port), *options],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_health(f"http://127.0.0.1:{port}/v1", timeout=300, process=engine)

        def ask(i: int) -> int:
            body = {"model": str(MODEL), "max_tokens": max_tokens, "temperature": 0,
                    "messages": [{"role": "system", "content": _prompt(i, clauses)},
                                 {"role": "user", "content": "Summarise clause 3."}]}
            reply = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body,
                               timeout=900).json()
            return reply["usage"]["prompt_tokens"]

        ask(999)  # the engine's first request pays its set-up
        started = time.perf_counter()
        tokens = [ask(i) for i in range(count)]
        sequential = time.perf_counter() - started
        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(count) as pool:
            list(pool.map(ask, range(100, 100 + count)))
        concurrent_s = time.perf_counter() - started
        return sequential, concurrent_s, sum(tokens) // count
    finally:
        engine.terminate()
        engine.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--short", action="store_true")
    args = parser.parse_args()
    count, clauses, max_tokens = (8, 6, 32) if args.short else (4, 110, 48)
    print(f"{count} prompts, {max_tokens} tokens each at most")
    print(f"{'engine setting':26}{'prompt':>8}{'one by one':>12}{'at once':>10}{'ratio':>8}")
    for name, options in SETTINGS.items():
        sequential, together, tokens = measure(options, count, clauses, max_tokens)
        print(f"{name:26}{tokens:>8}{sequential:>11.1f}s{together:>9.1f}s"
              f"{together / sequential:>8.2f}", flush=True)


if __name__ == "__main__":
    main()
