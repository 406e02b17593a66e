"""The key gate in front of `transformers serve`, measured side by side in one run:

- added latency of the gate (p50 of gate vs engine, same short request, sequential);
- throughput of concurrent clients (8) against sequential ones through the gate, which
  is what continuous batching buys on this machine.
"""

from __future__ import annotations

import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx


def timed_post(url: str, body: dict, headers: dict) -> float:
    started = time.perf_counter()
    response = httpx.post(url, json=body, headers=headers, timeout=300)
    response.raise_for_status()
    return time.perf_counter() - started


def main() -> int:
    from agentcycle.cli._common import quiet_libraries

    quiet_libraries()
    from agentcycle.models import chat_model_dir
    from agentcycle.serving import ModelServer
    from agentcycle.serving.server import free_port, wait_for_health

    model_dir = chat_model_dir()
    body = {"model": "bench", "max_tokens": 1, "messages": [{"role": "user", "content": "Hi"}]}
    auth = {"Authorization": "Bearer k"}
    import subprocess

    engine_port = free_port()
    engine = subprocess.Popen([sys.executable, "-m", "transformers.cli.transformers", "serve",
                               str(model_dir), "--port", str(engine_port),
                               "--continuous-batching"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_for_health(f"http://127.0.0.1:{engine_port}", process=engine)
        direct_url = f"http://127.0.0.1:{engine_port}/v1/chat/completions"
        direct_body = {**body, "model": str(model_dir)}
        with ModelServer(model_dir, api_key="k", model_name="bench") as server:
            gate_url = f"{server.base_url}/chat/completions"
            for _ in range(3):  # warm both
                timed_post(direct_url, direct_body, {})
                timed_post(gate_url, body, auth)
            direct, gated = [], []
            for _ in range(20):  # interleaved, so drift hits both alike
                direct.append(timed_post(direct_url, direct_body, {}))
                gated.append(timed_post(gate_url, body, auth))
            added_ms = (statistics.median(gated) - statistics.median(direct)) * 1000
            print(f"p50 engine {statistics.median(direct) * 1000:.1f} ms, through gate "
                  f"{statistics.median(gated) * 1000:.1f} ms: gate adds {added_ms:.1f} ms")

            long_body = {**body, "max_tokens": 32,
                         "messages": [{"role": "user", "content": "Describe a lease."}]}
            n = 16
            started = time.perf_counter()
            for _ in range(n):
                timed_post(gate_url, long_body, auth)
            sequential = n / (time.perf_counter() - started)
            started = time.perf_counter()
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda _: timed_post(gate_url, long_body, auth), range(n)))
            concurrent = n / (time.perf_counter() - started)
            print(f"requests/s sequential {sequential:.2f}, 8 concurrent {concurrent:.2f}: "
                  f"ratio {concurrent / sequential:.2f}x")
    finally:
        engine.terminate()
        engine.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
