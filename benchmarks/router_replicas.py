"""Issue 11: two router proxy replicas sharing their state through Redis, measured.

One canned OpenAI-compatible backend (its own process), a redis-server on 127.0.0.1 (no
persistence), two `agentcycle router serve` replicas, and a client that spreads requests
over the replicas round-robin (a tiny stand-in for a Kubernetes Service):

1. **One budget.** A priced `cloud` backend ($3 a call) under a $300 daily budget, then
   a free `local` one: with shared state the replicas together make ~100 cloud calls
   (plus at most the calls in flight when the budget ran out); with per-process state
   (no REDIS_URL) each replica spends the whole budget: ~200.
2. **A replica killed mid-load.** SIGKILL of one replica a third of the way through; the
   client retries a request whose connection failed on the other replica and stops
   sending to the dead one (as a Service drops an endpoint whose readiness fails).
   Goal: zero failed client requests. Retried requests that were in flight on the
   killed replica may have reached the backend twice (a POST is not idempotent): counted.

Run: `flock /tmp/bench.lock python benchmarks/router_replicas.py [--requests 600]
[--concurrency 16]`.
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
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import router_proxy as rp  # noqa: E402  (the canned backend and process helpers)

from redis_server import REDIS_SERVER, RedisServer  # noqa: E402

AGENTCYCLE = str(Path(sys.executable).parent / "agentcycle")
BODY = {"model": "default", "max_tokens": 16,
        "messages": [{"role": "user", "content": "What is the deposit cap?"}]}
COST_PER_CALL = 3.0  # the canned answer's 12 prompt tokens at $250 / 1K
BUDGET = 300.0


def write_config(folder: Path, backend_port: int) -> Path:
    api = f"api_base: http://127.0.0.1:{backend_port}/v1, transport: direct, timeout_s: 10"
    config = folder / "router.yaml"
    config.write_text(f"""\
tracing: false
backends:
  cloud: {{model: openai/canned, {api}, input_usd_per_1k: 250.0, output_usd_per_1k: 0.0}}
  local: {{model: openai/canned, {api}, local: true}}
routes:
  default: {{backends: [cloud, local], policies: [{{budget: {{usd_per_day: {BUDGET}}}}}]}}
  plain: {{backends: [local]}}
""")
    return config


@contextlib.contextmanager
def replicas(config: Path, folder: Path, redis_url: str | None, tag: str):
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "CACHE_URL")}
    if redis_url:
        env.update(REDIS_URL=redis_url, AGENTCYCLE_ROUTER_NAMESPACE=tag)
    with contextlib.ExitStack() as stack:
        procs, urls = [], []
        for i in range(2):
            port = rp.free_port()
            home = folder / f"{tag}-home-{i}"
            proc = stack.enter_context(rp.process(
                [AGENTCYCLE, "router", "serve", "--config", str(config), "--port", str(port)],
                f"http://127.0.0.1:{port}/health", folder / f"{tag}-replica-{i}.log",
                env={**env, "AGENTCYCLE_HOME": str(home)}, stop_signal=signal.SIGTERM))
            procs.append(proc)
            urls.append(f"http://127.0.0.1:{port}")
        yield procs, urls


class RoundRobin:
    """Replicas in turn; a connection failure retries on the next live one and drops
    the failed replica from the rotation."""

    def __init__(self, urls: list[str]):
        self.urls = urls
        self.alive = list(urls)
        self.turn = 0
        self.retried = 0
        self.failed = 0
        self.latencies: list[float] = []
        self.backends: list[str] = []

    async def post(self, client: httpx.AsyncClient, route: str) -> None:
        self.turn += 1
        started = time.perf_counter()
        for attempt in range(len(self.urls)):
            live = self.alive or self.urls
            url = live[(self.turn + attempt) % len(live)]
            try:
                reply = await client.post(url + "/v1/chat/completions",
                                          json={**BODY, "model": route})
            except httpx.TransportError:
                if url in self.alive and len(self.alive) > 1:
                    self.alive.remove(url)
                self.retried += 1
                continue
            if reply.status_code == 200:
                self.latencies.append(time.perf_counter() - started)
                self.backends.append(reply.headers.get("x-agentcycle-backend", "?"))
            else:
                self.failed += 1
            return
        self.failed += 1


async def load(balancer: RoundRobin, route: str, requests: int, concurrency: int,
               kill: subprocess.Popen | None = None) -> float:
    """``requests`` over ``concurrency`` workers; SIGKILL ``kill`` a third of the way."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    done = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal done
        while True:
            try:
                queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await balancer.post(client, route)
            done += 1
            if kill is not None and done == requests // 3 and kill.poll() is None:
                os.killpg(kill.pid, signal.SIGKILL)

    limits = httpx.Limits(max_connections=concurrency * 2)
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        await asyncio.gather(*[worker(client) for _ in range(concurrency)])
    return time.perf_counter() - started


def state_cost(url: str, rounds: int = 2000) -> tuple[float, float]:
    """Microseconds of one request's state work (cooling check, budget read, spend add),
    per-process state against Redis on loopback, one after another."""
    from agentcycle.router.shared_state import RedisState
    from agentcycle.router.state import RouterState

    async def per_request(state: RouterState) -> float:
        started = time.perf_counter()
        for _ in range(rounds):
            await state.acooling_among(["cloud", "local"])
            await state.aspent_today("default")
            await state.aadd_spend("default", 0.001)
        elapsed = time.perf_counter() - started
        await state.aclose()
        return elapsed / rounds * 1e6

    return (asyncio.run(per_request(RouterState())),
            asyncio.run(per_request(RedisState(url, namespace="cost"))))


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] * 1000 if len(values) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="router-replicas-"))
    rows: list[tuple[str, ...]] = []
    backend_port = rp.free_port()
    if REDIS_SERVER is None:
        sys.exit("error: redis-server is not installed (Debian: apt-get install redis-server)")
    with rp.backend_process(backend_port, folder, "backend"), \
            RedisServer(log=folder / "redis.log") as redis:
        url = redis.url
        config = write_config(folder, backend_port)
        for name, shared in (("shared (Redis)", url), ("per process", None)):
            with replicas(config, folder, shared, "budget" + ("-shared" if shared else "")) \
                    as (_, urls):
                balancer = RoundRobin(urls)
                elapsed = asyncio.run(load(balancer, "default", 400, args.concurrency))
                cloud, lat = balancer.backends.count("cloud"), balancer.latencies
                rows.append((f"budget, {name}", f"{cloud} cloud calls "
                             f"(${cloud * COST_PER_CALL:.0f} of ${BUDGET:.0f})",
                             f"{balancer.failed} failed, p50 {pct(lat, 50):.1f} ms, "
                             f"{len(lat) / elapsed:.0f} req/s"))
        with replicas(config, folder, url, "failover") as (procs, urls):
            balancer = RoundRobin(urls)
            elapsed = asyncio.run(load(balancer, "plain", args.requests, args.concurrency,
                                       kill=procs[0]))
            lat = balancer.latencies
            rows.append(("replica killed mid-load",
                         f"{len(lat)}/{args.requests} ok, {balancer.failed} failed, "
                         f"{balancer.retried} retried on the other replica",
                         f"p50 {pct(lat, 50):.1f} ms, p95 {pct(lat, 95):.1f} ms, p99 "
                         f"{pct(lat, 99):.1f} ms, {len(lat) / elapsed:.0f} req/s"))
        local_us, redis_us = state_cost(url)
        rows.append(("state work per request", f"per process {local_us:.0f} us",
                     f"Redis on loopback {redis_us:.0f} us"))
    print(f"\nrouter replicas ({args.concurrency} concurrent clients, logs in {folder})")
    for row in rows:
        print(" | ".join(row))


if __name__ == "__main__":
    main()
