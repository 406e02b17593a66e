"""Issue 5: multi-agent messaging over the embedded nats-server, on loopback.

- request/reply latency between two agents (a coordinator and a worker process), model
  time excluded (an echo agent): p50 and p99 of a full Task -> AgentResult round trip
  (goal p50 < 5 ms);
- JetStream work-queue throughput with 1, 2 and 4 worker processes, for tasks of 0 ms
  and 50 ms of (simulated) agent work;
- fault run: a worker SIGKILLed mid-task under load; lost and duplicated results are
  counted (goal: zero and zero), and how many tasks were redelivered.

Every worker is its own `agentcycle multi worker` process; all share this machine's
cores with the server and the load generator.

Run: `flock /tmp/bench.lock python benchmarks/nats_agents.py [--requests 1000]
[--tasks 400]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from agentcycle.agents import AgentResult, BaseAgent


class Echo(BaseAgent):
    """No model: answers at once, or after ``options['work_ms']`` of simulated work."""

    kind = "echo"

    async def arun(self, task: str, **options) -> AgentResult:
        if options.get("work_ms"):
            await asyncio.sleep(options["work_ms"] / 1000)
        return AgentResult(answer=task, kind="echo")


def echo_agent() -> Echo:
    return Echo()


class WorkerProcess:
    """An `agentcycle multi worker` process; ``busy`` is set while it runs a task."""

    def __init__(self, url: str, pool: str, name: str, ack_wait: float):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "agentcycle", "multi", "worker", "--agent",
             f"{Path(__file__).resolve()}:echo_agent", "--pool", pool, "--url", url,
             "--name", name, "--no-trace", "--ack-wait", str(ack_wait)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.ready, self.busy, self.output = threading.Event(), threading.Event(), []
        threading.Thread(target=self._follow, daemon=True).start()

    def _follow(self) -> None:  # also keeps the pipe drained
        for line in self.process.stdout:
            self.output.append(line)
            if line.startswith("worker "):
                self.ready.set()
            elif line.startswith("started "):
                self.busy.set()
            elif line.startswith("done "):
                self.busy.clear()

    def send_signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signum)


def start_workers(url: str, pool: str, count: int, ack_wait: float = 30.0) -> list:
    workers = [WorkerProcess(url, pool, f"w{i}", ack_wait) for i in range(count)]
    for worker in workers:
        if not worker.ready.wait(60):
            stop_workers(workers)
            raise SystemExit("a worker did not start: " + "".join(worker.output[-5:]))
    return workers


def stop_workers(workers: list) -> None:
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.process.wait(10)
        except subprocess.TimeoutExpired:
            worker.process.kill()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


async def request_latency(url: str, requests: int) -> dict:
    from agentcycle.agents.multi import QueueConfig, Task, new_job_id
    from agentcycle.messaging import connect, new_traceparent

    config = QueueConfig(pool=f"rr{uuid.uuid4().hex[:6]}")
    workers = start_workers(url, config.pool, 1)
    nc = await connect(url)
    try:
        job, header = new_job_id(), {"traceparent": new_traceparent()}
        times = []
        for i in range(requests + 50):  # the first 50 warm up
            payload = Task.new(job, i, f"question {i}").model_dump_json().encode()
            started = time.perf_counter()
            reply = await nc.request(config.rpc_subject, payload, timeout=10, headers=header)
            AgentResult.model_validate_json(reply.data)
            if i >= 50:
                times.append((time.perf_counter() - started) * 1000)
    finally:
        await nc.close()
        stop_workers(workers)
    return {"p50": statistics.median(times), "p99": percentile(times, 99), "n": len(times)}


async def run_queue(url: str, workers: int, tasks: int, work_ms: float,
                    kill_after: int | None = None) -> dict:
    """Publish ``tasks`` to a fresh pool served by ``workers`` processes; time until every
    result is in. ``kill_after``: SIGKILL one worker once that many results arrived."""
    from agentcycle.agents.multi import QueueConfig, Task, ensure_queue, new_job_id
    from agentcycle.agents.multi.coordinator import publish_tasks
    from agentcycle.messaging import connect, new_traceparent

    config = QueueConfig(pool=f"q{uuid.uuid4().hex[:6]}", ack_wait=1.0)
    processes = start_workers(url, config.pool, workers, config.ack_wait)
    nc = await connect(url)
    updates: dict[str, list[AgentResult]] = {}
    try:
        kv = await ensure_queue(nc.jetstream(), config)
        job = new_job_id()
        watcher = await kv.watch(f"{job}.*")
        batch = [Task.new(job, i, f"task {i}", work_ms=work_ms) for i in range(tasks)]
        started = time.perf_counter()
        await publish_tasks(nc.jetstream(), config, batch, new_traceparent())
        deadline = started + 60 + tasks * work_ms / 1000
        while len(updates) < tasks and time.perf_counter() < deadline:
            with contextlib.suppress(Exception):
                entry = await watcher.updates(timeout=max(0.01, deadline - time.perf_counter()))
                if entry is not None and entry.value:
                    updates.setdefault(entry.key, []).append(
                        AgentResult.model_validate_json(entry.value))
            if kill_after is not None and len(updates) >= kill_after:
                # mid-task: wait (briefly) for the victim to be inside its agent call
                await asyncio.to_thread(processes[0].busy.wait, 5)
                processes[0].send_signal(signal.SIGKILL)
                kill_after = None
        elapsed = time.perf_counter() - started
        with contextlib.suppress(Exception):  # anything arriving late would be a duplicate
            while True:
                entry = await watcher.updates(timeout=2 * config.ack_wait)
                if entry is not None and entry.value:
                    updates.setdefault(entry.key, []).append(
                        AgentResult.model_validate_json(entry.value))
        await watcher.stop()
    finally:
        await nc.close()
        stop_workers(processes)
    results = [r for rs in updates.values() for r in rs]
    return {"workers": workers, "tasks": tasks, "work_ms": work_ms, "seconds": elapsed,
            "per_s": len(updates) / elapsed, "lost": tasks - len(updates),
            "duplicated": len(results) - len(updates),
            "redelivered": sum(r.metadata.get("deliveries", 1) > 1 for r in results)}


def main() -> None:
    from rich.console import Console
    from rich.table import Table

    from agentcycle.messaging import NatsServer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--tasks", type=int, default=400)
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as store, NatsServer(store) as server:
        latency = asyncio.run(request_latency(server.url, args.requests))
        table = Table(title="request/reply between two agents (echo, no model)")
        for column in ("requests", "p50 ms", "p99 ms", "goal"):
            table.add_column(column)
        table.add_row(str(latency["n"]), f"{latency['p50']:.2f}", f"{latency['p99']:.2f}",
                      "p50 < 5 ms " + ("met" if latency["p50"] < 5 else "MISSED"))
        console.print(table)

        table = Table(title="JetStream work queue throughput (worker processes)")
        for column in ("workers", "work/task ms", "tasks", "seconds", "tasks/s", "lost",
                       "duplicated"):
            table.add_column(column)
        for work_ms, tasks in ((0, args.tasks), (50, max(40, args.tasks // 4))):
            for workers in (1, 2, 4):
                row = asyncio.run(run_queue(server.url, workers, tasks, work_ms))
                table.add_row(str(workers), str(work_ms), str(tasks), f"{row['seconds']:.2f}",
                              f"{row['per_s']:.0f}", str(row["lost"]), str(row["duplicated"]))
        console.print(table)

        fault = asyncio.run(run_queue(server.url, 3, args.tasks // 2, 50,
                                      kill_after=args.tasks // 8))
        table = Table(title="fault run: 1 of 3 workers SIGKILLed mid-task (ack_wait 1 s)")
        for column in ("tasks", "results", "lost", "duplicated", "redelivered", "seconds",
                       "goal"):
            table.add_column(column)
        ok = fault["lost"] == 0 and fault["duplicated"] == 0
        table.add_row(str(fault["tasks"]), str(fault["tasks"] - fault["lost"]),
                      str(fault["lost"]), str(fault["duplicated"]), str(fault["redelivered"]),
                      f"{fault['seconds']:.2f}", "0 lost, 0 dup " + ("met" if ok else "MISSED"))
        console.print(table)


if __name__ == "__main__":
    main()
