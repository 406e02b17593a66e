"""Issue 11: fault runs and memory under load, every server on 127.0.0.1.

- **router**: `agentcycle router serve` with two backends, the local model server
  (`agentcycle serve`, the bundled SmolLM2) first and a canned OpenAI-protocol backend
  second; a bounded load of concurrent chats; the model server's process group is
  SIGKILLed halfway. Goal: zero failed client requests (the router falls back).
- **nats**: a nats-server on a fixed port and store, two `agentcycle multi worker`
  processes (a scripted agent: 100 ms of simulated work, no model) and coordinators
  (`MultiAgent`, queue mode) running jobs; the server is stopped (SIGTERM) a third of
  the way in and started again on the same port and store. Goal: every subtask
  answered, exactly once; the gap is reported.
- **memory**: RSS (psutil, the process and its children) of the router proxy (canned
  backend), the agent app (tools agent, a scripted model behind it, an API key) and the
  model server's key gate (in front of the canned backend as its engine), sampled after
  100, 1,000, 5,000 and 10,000 requests. Goal: no growth beyond noise.

Run: `flock /tmp/bench.lock python benchmarks/fault_runs.py [router nats memory]
[--requests N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests"))
import nats_agents as na  # noqa: E402  (the echo agent, worker processes)
import router_proxy as rp  # noqa: E402  (the canned backend, process helpers)

from restartable_nats import RestartableNats  # noqa: E402

AGENTCYCLE = str(Path(sys.executable).parent / "agentcycle")
CHAT = {"model": "default", "max_tokens": 8,
        "messages": [{"role": "user", "content": "What is the deposit cap?"}]}


def pct(values: list[float], q: float) -> float:
    """The q-th percentile of ``values`` (seconds), in ms."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] * 1000


def table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Table(title=title)
    for column in columns:
        out.add_column(column, justify="right")
    for row in rows:
        out.add_row(*row)
    Console(width=80).print(out)


def phase(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


# --- 1. the model server killed mid-load behind the router -------------------------------

async def chats(url: str, requests: int, concurrency: int, on_done) -> list[dict]:
    """``requests`` chats over ``concurrency`` clients; one record per request."""
    records: list[dict] = []
    queue = list(range(requests))

    async def client_loop(client: httpx.AsyncClient) -> None:
        while queue:
            queue.pop()
            started = time.perf_counter()
            record = {"start": started, "ok": False, "backend": "", "error": ""}
            try:
                reply = await client.post(url, json=CHAT)
                record["ok"] = reply.status_code == 200
                record["backend"] = reply.headers.get("x-agentcycle-backend", "?")
                if not record["ok"]:
                    record["error"] = f"{reply.status_code} {reply.text[:120]}"
            except httpx.HTTPError as exc:
                record["error"] = f"{type(exc).__name__}: {exc}"
            record["s"] = time.perf_counter() - started
            records.append(record)
            on_done(len(records))

    async with httpx.AsyncClient(timeout=120) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
    return records


def router_run(args: argparse.Namespace, folder: Path) -> None:
    serve_port, canned_port, proxy_port = rp.free_port(), rp.free_port(), rp.free_port()
    config = folder / "router.yaml"
    config.write_text(f"""\
tracing: false
db_path: {folder / 'router.db'}
backends:
  local: {{model: openai/local, api_base: http://127.0.0.1:{serve_port}/v1, local: true,
          transport: direct, timeout_s: 60}}
  second: {{model: openai/canned, api_base: http://127.0.0.1:{canned_port}/v1, local: true,
           transport: direct, timeout_s: 10}}
routes:
  default: {{backends: [local, second]}}
""")
    env = {"AGENTCYCLE_HOME": str(folder / "home"),
           "AGENTCYCLE_CACHE": os.environ.get("AGENTCYCLE_CACHE",
                                              str(REPO / ".agentcycle" / "models"))}
    phase("router: starting the model server (bundled model), a canned backend, the proxy")
    with contextlib.ExitStack() as stack:
        serve = stack.enter_context(rp.process(
            [AGENTCYCLE, "serve", "--port", str(serve_port), "--model-name", "local"],
            f"http://127.0.0.1:{serve_port}/health", folder / "serve.log", env=env,
            timeout=300))
        stack.enter_context(rp.backend_process(canned_port, folder, "canned"))
        stack.enter_context(rp.process(
            [AGENTCYCLE, "router", "serve", "--config", str(config), "--port", str(proxy_port)],
            f"http://127.0.0.1:{proxy_port}/health", folder / "proxy.log", env=env))
        url = f"http://127.0.0.1:{proxy_port}/v1/chat/completions"
        asyncio.run(chats(url, 4, 2, lambda n: None))  # warm the model
        killed_at: list[float] = []

        def on_done(done: int) -> None:
            if not killed_at and done >= args.requests // 2:
                os.killpg(serve.pid, signal.SIGKILL)
                killed_at.append(time.perf_counter())
                phase(f"router: model server SIGKILLed after {done} answers")

        phase(f"router: {args.requests} chats at {args.concurrency} clients")
        records = asyncio.run(chats(url, args.requests, args.concurrency, on_done))
    kill = killed_at[0] if killed_at else float("inf")
    before = [r for r in records if r["start"] + r["s"] < kill]
    after = [r for r in records if r["start"] + r["s"] >= kill]
    rows = []
    for name, part in (("before kill", before), ("after kill", after)):
        ok = [r["s"] for r in part if r["ok"]]
        local = sum(r["backend"] == "local" for r in part)
        rows.append([name, str(len(part)), str(len(part) - len(ok)), str(local),
                     str(sum(r["backend"] == "second" for r in part)),
                     f"{pct(ok, 50):.0f}", f"{pct(ok, 95):.0f}"])
    failed = [r["error"] for r in records if not r["ok"]]
    table(f"model server killed mid-load behind the router ({args.concurrency} clients)",
          ["phase", "requests", "failed", "local", "fell back", "p50 ms", "p95 ms"], rows)
    print(f"goal 0 failed: {'met' if not failed else 'MISSED'}"
          + (f" (first error: {failed[0]})" if failed else ""))


# --- 2. NATS restarted while agents run --------------------------------------------------

async def coordinate(url: str, pool: str, jobs: int, parallel: int, subtasks: int,
                     work_ms: float, on_result) -> list:
    """``jobs`` coordinator runs, ``parallel`` at once, each of ``subtasks`` subtasks."""
    from agentcycle.agents.multi import MultiAgent, QueueConfig

    config = QueueConfig(pool=pool, ack_wait=2.0)
    agent = MultiAgent(config=config, url=url, trace=False, timeout=120,
                       planner=lambda task: [f"{task} part {i}" for i in range(subtasks)])
    queue = list(range(jobs))
    results = []

    async def one_loop() -> None:
        while queue:
            job = queue.pop()
            result = await agent.arun(f"job {job}", work_ms=work_ms)
            results.append(result)
            on_result(result)

    await asyncio.gather(*(one_loop() for _ in range(parallel)))
    return results


def nats_run(args: argparse.Namespace, folder: Path) -> None:
    server = RestartableNats(folder / "nats").start()
    pool = "faults"
    workers = na.start_workers(server.url, pool, 2, ack_wait=2.0)
    jobs, subtasks = args.jobs, 10
    marks: dict[str, float] = {}
    finished: list[float] = []

    def restart() -> None:
        marks["stop"] = time.perf_counter()
        server.stop()
        phase(f"nats: server stopped after {len(finished)} jobs; down {args.down_s:g} s")
        time.sleep(args.down_s)
        server.start()
        marks["start"] = time.perf_counter()
        phase("nats: server started again on the same port and store")

    def on_result(result) -> None:
        finished.append(time.perf_counter())
        if len(finished) == jobs // 3 and "stop" not in marks:
            marks["stop"] = 0.0
            threading.Thread(target=restart, daemon=True).start()  # the run goes on

    try:
        phase(f"nats: {jobs} jobs x {subtasks} subtasks, 4 coordinators, 2 workers")
        started = time.perf_counter()
        results = asyncio.run(coordinate(server.url, pool, jobs, 4, subtasks, 100,
                                         on_result))
        elapsed = time.perf_counter() - started
    finally:
        na.stop_workers(workers)
        server.stop()
    failed = [(a["index"], a["error"]) for r in results for a in r.metadata["subtasks"]
              if a["status"] == "failed"]
    answered = [r for r in results if not r.metadata["failed"]]
    done_lines = [line.split()[1] for w in workers for line in w.output
                  if line.startswith("done ")]
    duplicated = len(done_lines) - len(set(done_lines))
    resumed = [t for t in finished if t > marks.get("start", float("inf"))]
    gap = (resumed[0] - marks["stop"]) if resumed else float("nan")
    lost = jobs * subtasks - len(set(done_lines))
    table("NATS restarted while agents run (scripted agent, 100 ms a subtask)",
          ["jobs", "subtasks", "answered", "lost", "answered 2x", "gap s", "total s"],
          [[str(jobs), str(jobs * subtasks), str(len(set(done_lines))), str(lost),
            str(duplicated), f"{gap:.1f}", f"{elapsed:.1f}"]])
    ok = len(answered) == jobs and lost == 0 and not failed
    print(f"{len(answered)}/{jobs} jobs answered in full; goal every task answered once: "
          f"{'met' if ok and duplicated == 0 else 'MISSED'} (gap = server stop -> first "
          f"job finished after the restart, {args.down_s:g} s of it down)"
          + (f"; first failed subtask: {failed[0]}" if failed else ""))


# --- 3. memory after 100 ... 10,000 requests ---------------------------------------------

def rss_mb(pid: int) -> float:
    import psutil

    root = psutil.Process(pid)
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total / 2**20


async def hammer(url: str, body: dict, headers: dict, marks: list[int], pid: int,
                 concurrency: int = 8) -> tuple[list[float], int]:
    """Send ``marks[-1]`` requests; RSS of ``pid`` at each mark (requests answered)."""
    samples: list[float] = []
    sent = done = failed = 0
    mark = iter(marks)
    next_mark = next(mark)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, headers=headers, limits=limits) as client:
        async def loop() -> None:
            nonlocal sent, done, failed, next_mark
            while sent < marks[-1]:
                sent += 1
                try:
                    reply = await client.post(url, json=body)
                    failed += reply.status_code != 200
                except httpx.HTTPError:
                    failed += 1
                done += 1
                if done == next_mark:
                    samples.append(rss_mb(pid))
                    next_mark = next(mark, None)

        await asyncio.gather(*(loop() for _ in range(concurrency)))
    return samples, failed


def memory_run(args: argparse.Namespace, folder: Path) -> None:
    from agentcycle.testing import ScriptedModel

    marks = sorted({m for m in (100, 1000, 5000) if m < args.memory_requests}
                   | {args.memory_requests})
    env = {"AGENTCYCLE_HOME": str(folder / "mem-home")}
    rows = []
    canned_port = rp.free_port()
    with contextlib.ExitStack() as stack:
        stack.enter_context(rp.backend_process(canned_port, folder, "mem-canned"))
        port, proxy = rp.proxy_process([canned_port], folder)
        servers = [("router proxy", stack.enter_context(proxy).pid,
                    f"http://127.0.0.1:{port}/v1/chat/completions", CHAT, rp.HEADERS)]
        gate_port = rp.free_port()
        gate = stack.enter_context(rp.process(
            [sys.executable, __file__, "--serve-gate", str(gate_port), str(canned_port)],
            f"http://127.0.0.1:{gate_port}/health", folder / "gate.log"))
        servers.append(("model server gate", gate.pid,
                        f"http://127.0.0.1:{gate_port}/v1/chat/completions",
                        {**CHAT, "model": "local"}, {"Authorization": "Bearer gate-key"}))
        model = stack.enter_context(ScriptedModel(default="A deposit is capped at 1.5x."))
        app_port = rp.free_port()
        app = stack.enter_context(rp.process(
            [AGENTCYCLE, "app", "--agent", "tools", "--port", str(app_port),
             "--rate-limit", "1000000", "--max-concurrency", "8"],
            f"http://127.0.0.1:{app_port}/health", folder / "app.log",
            env={**env, "AGENTCYCLE_SERVER_URL": model.base_url,
                 "AGENTCYCLE_API_KEYS": "bench=bench-app-key-0001"}, timeout=180))
        servers.append(("agent app (tools)", app.pid, f"http://127.0.0.1:{app_port}/v1/ask",
                        {"question": "What is the deposit cap?"},
                        {"Authorization": "Bearer bench-app-key-0001"}))
        for name, pid, url, body, headers in servers:
            if args.servers and not any(part in name for part in args.servers):
                continue
            upto = [m for m in marks if m <= (args.app_requests if "app" in name else m)]
            phase(f"memory: {name}, {upto[-1]} requests")
            started = time.perf_counter()
            samples, failed = asyncio.run(hammer(url, body, headers, upto, pid))
            model.requests.clear()
            rows.append([name, *(f"{s:.0f}" for s in samples), *[""] * (len(marks) - len(upto)),
                         f"{samples[-1] - samples[0]:+.0f}", str(failed),
                         f"{upto[-1] / (time.perf_counter() - started):.0f}"])
    table("RSS (MiB, process tree) after N requests, 8 clients",
          ["server", *(f"{m:,}" for m in marks), "growth", "failed", "req/s"], rows)


def serve_gate(port: int, engine_port: int) -> None:
    """The model server's key gate (as `agentcycle serve` runs it) in front of the
    canned backend as its engine."""
    import uvicorn

    from agentcycle.serving.gate import build_gate

    app = build_gate(f"http://127.0.0.1:{engine_port}", "canned", "local", "gate-key")
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", help="router, nats, memory (default: all)")
    parser.add_argument("--requests", type=int, default=60, help="router run: chats")
    parser.add_argument("--concurrency", type=int, default=4, help="router run: clients")
    parser.add_argument("--jobs", type=int, default=30, help="nats run: coordinator jobs")
    parser.add_argument("--down-s", type=float, default=2.0, help="nats run: outage")
    parser.add_argument("--memory-requests", type=int, default=10_000)
    parser.add_argument("--app-requests", type=int, default=5000,
                        help="memory run: the agent app's share (~20 req/s here)")
    parser.add_argument("--servers", nargs="*", help="memory run: only these (router, "
                        "gate, app)")
    parser.add_argument("--serve-gate", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_gate:
        serve_gate(*args.serve_gate)
        return
    runs = {"router": router_run, "nats": nats_run, "memory": memory_run}
    unknown = set(args.runs) - set(runs)
    if unknown:
        parser.error(f"unknown run {sorted(unknown)[0]!r}: use router, nats or memory")
    folder = Path(tempfile.mkdtemp(prefix="fault-runs-"))
    for run in args.runs or list(runs):
        runs[run](args, folder)
    print(f"logs: {folder}")


if __name__ == "__main__":
    main()
