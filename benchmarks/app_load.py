"""Issue 11: the agent app under a bounded load on loopback, with the bundled model.

`agentcycle app` (the RAG agent over the legal example, the bundled SmolLM2 behind the
model server, as a user starts it) runs in its own process with two API keys. Then
10 and 50 concurrent users (asyncio + httpx, keys alternating) each send a fixed
number of questions, every one bounded in time (--timeout) and the whole step too
(--deadline). Per step: p50/p95/p99 latency of the answered requests, throughput,
how many were refused cleanly (429/503 with Retry-After: the app's bounded queue at
work) and how many failed (any other status, a dropped connection, a timeout: the goal
is 0), and the app's memory (RSS of its process tree) before and after.

Clients do not retry: a refusal is counted as one, so the table shows what the app
admits at --max-concurrency runs at once with a --max-queue-long queue.

Run: `flock /tmp/bench.lock python benchmarks/app_load.py [--users 10 50]
[--requests 3 2] [--max-concurrency 4]`. The model is converted once and cached under
.agentcycle/models (as `make demo` does); the app's data dir is a temporary folder.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
KEYS = {"bench-a": "bench-key-aaaa-0001", "bench-b": "bench-key-bbbb-0002"}
QUESTIONS = ["How long does a landlord have to return a deposit?",
             "What form does a tenant use to start a dispute?",
             "How much notice is needed to end a monthly tenancy?",
             "What is the maximum security deposit?"]


@dataclass
class Step:
    users: int
    requests: int
    latencies_s: list[float] = field(default_factory=list)
    refused: dict[int, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    rss_before_mb: float = 0.0
    rss_after_mb: float = 0.0

    def pct(self, p: float) -> float:
        if not self.latencies_s:
            return float("nan")
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def user(http: httpx.AsyncClient, url: str, number: int, step: Step,
               timeout_s: float) -> None:
    key = list(KEYS.values())[number % len(KEYS)]
    for i in range(step.requests):
        question = QUESTIONS[(number + i) % len(QUESTIONS)]
        started = time.perf_counter()
        try:
            response = await http.post(f"{url}/v1/ask", json={"question": question},
                                       headers={"Authorization": f"Bearer {key}"},
                                       timeout=timeout_s)
        except httpx.HTTPError as exc:
            step.failed[type(exc).__name__] = step.failed.get(type(exc).__name__, 0) + 1
            continue
        if response.status_code == 200 and response.json().get("answer") is not None:
            step.latencies_s.append(time.perf_counter() - started)
        elif response.status_code in (429, 503) and response.headers.get("retry-after") \
                and _code(response) in ("rate_limit_exceeded", "server_overloaded"):
            step.refused[response.status_code] = step.refused.get(response.status_code, 0) + 1
        else:
            name = f"HTTP {response.status_code}"
            step.failed[name] = step.failed.get(name, 0) + 1


def _code(response: httpx.Response) -> str:
    """The guard's refusal code; a 503 from a failed model call has none (a failure)."""
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return ""


async def run_step(url: str, step: Step, timeout_s: float, deadline_s: float,
                   pid: int) -> None:
    limits = httpx.Limits(max_connections=step.users, max_keepalive_connections=step.users)
    step.rss_before_mb = rss_mb(pid)
    async with httpx.AsyncClient(limits=limits) as http:
        started = time.perf_counter()
        tasks = [asyncio.create_task(user(http, url, n, step, timeout_s))
                 for n in range(step.users)]
        done, pending = await asyncio.wait(tasks, timeout=deadline_s)
        for task in pending:  # past the step's deadline: counted as failed, not hidden
            task.cancel()
        step.wall_s = time.perf_counter() - started
    answered = len(step.latencies_s) + sum(step.refused.values()) + sum(step.failed.values())
    missing = step.users * step.requests - answered
    if missing:
        step.failed["unfinished at the deadline"] = missing
    step.rss_after_mb = rss_mb(pid)


def rss_mb(pid: int) -> float:
    try:
        import psutil
    except ImportError:
        return float("nan")
    try:
        root = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20
    except psutil.Error:
        return float("nan")


def start_app(port: int, home: Path, max_concurrency: int) -> subprocess.Popen:
    env = {**os.environ, "AGENTCYCLE_HOME": str(home),
           "AGENTCYCLE_CACHE": os.environ.get("AGENTCYCLE_CACHE",
                                              str(REPO / ".agentcycle" / "models")),
           "AGENTCYCLE_API_KEYS": ",".join(f"{n}={k}" for n, k in KEYS.items()),
           "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    cli = Path(sys.executable).with_name("agentcycle")
    return subprocess.Popen(
        [str(cli), "app", "--port", str(port), "--rate-limit", "100000",
         "--max-concurrency", str(max_concurrency)],
        env=env, cwd=home.parent, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=(home.parent / "app.log").open("w"))


def wait_ready(url: str, proc: subprocess.Popen, timeout_s: float = 600) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if proc.poll() is not None:
            raise SystemExit(f"the app exited with {proc.returncode} before it was ready")
        try:
            if httpx.get(f"{url}/ready", timeout=5).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SystemExit(f"the app was not ready within {timeout_s:.0f} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(30)
    # whatever the app left behind (its model server) goes with its session
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def table(steps: list[Step], max_concurrency: int) -> str:
    lines = [f"agent app (RAG, bundled SmolLM2-135M, max {max_concurrency} runs at once, "
             f"{os.cpu_count()} cores)", "",
             "| users | requests | answered | refused 429/503 | failed | p50 s | p95 s | "
             "p99 s | answers/s | RSS MB before -> after |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for s in steps:
        total = s.users * s.requests
        refused = f"{s.refused.get(429, 0)}/{s.refused.get(503, 0)}"
        failed = sum(s.failed.values())
        failed_text = f"{failed} ({', '.join(f'{k}: {v}' for k, v in s.failed.items())})" \
            if failed else "0"
        lines.append(f"| {s.users} | {total} | {len(s.latencies_s)} | {refused} | "
                     f"{failed_text} | {s.pct(50):.2f} | {s.pct(95):.2f} | {s.pct(99):.2f} | "
                     f"{len(s.latencies_s) / s.wall_s:.2f} | "
                     f"{s.rss_before_mb:.0f} -> {s.rss_after_mb:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--requests", type=int, nargs="+", default=[3, 2],
                        help="questions per user, one number per --users entry")
    parser.add_argument("--max-concurrency", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=180.0, help="per request, s")
    parser.add_argument("--deadline", type=float, default=600.0, help="per step, s")
    args = parser.parse_args()
    if len(args.requests) != len(args.users):
        parser.error("give one --requests number per --users entry")
    from agentcycle.serving.server import free_port

    with tempfile.TemporaryDirectory(prefix="app-load-") as tmp:
        port, home = free_port(), Path(tmp) / "home"
        home.mkdir()
        url = f"http://127.0.0.1:{port}"
        proc = start_app(port, home, args.max_concurrency)
        try:
            print(f"app ready after {wait_ready(url, proc):.0f} s", flush=True)
            asyncio.run(run_step(url, Step(1, 1), args.timeout, args.deadline, proc.pid))
            steps = []
            for users, requests in zip(args.users, args.requests, strict=True):
                step = Step(users, requests)
                asyncio.run(run_step(url, step, args.timeout, args.deadline, proc.pid))
                steps.append(step)
                print(f"{users} users: {len(step.latencies_s)} answered, refused "
                      f"{step.refused}, failed {step.failed} in {step.wall_s:.0f} s",
                      flush=True)
            stats = httpx.get(f"{url}/v1/stats", timeout=10,
                              headers={"Authorization": f"Bearer {KEYS['bench-a']}"}).json()
        finally:
            stop(proc)
    print()
    print(table(steps, args.max_concurrency))
    print()
    print("per key (GET /v1/stats):", {k: (v["requests"], v["refused"], v["tokens_today"])
                                       for k, v in stats["keys"].items()})
    if steps and statistics.fmean(sum(s.failed.values()) for s in steps) > 0:
        sys.exit(1)


if __name__ == "__main__":
    main()
