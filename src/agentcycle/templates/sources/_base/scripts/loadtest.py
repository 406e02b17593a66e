"""A bounded load test of the running app: N questions at C concurrent users against a
URL on loopback (or any URL you pass), then p50/p95/max latency, throughput and errors.

    python scripts/loadtest.py --url http://127.0.0.1:8000 --requests 40 --concurrency 10

Bounded in count (--requests) and in time (--timeout per request, --deadline overall):
it never runs open-ended. Exit 1 when any request failed (refusals 429/503 included).
The key comes from --key or the first of AGENTCYCLE_API_KEYS (name=key,...).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time

import httpx

QUESTIONS = ("How many days do I have to return an item?", "How fast is express shipping?",
             "What is the warranty on a tent?", "How long does a refund take?")


def first_key() -> str | None:
    keys = os.environ.get("AGENTCYCLE_API_KEYS", "")
    pair = keys.split(",")[0].strip()
    return pair.split("=", 1)[1] if "=" in pair else (pair or None)


async def one(client: httpx.AsyncClient, url: str, question: str) -> tuple[float, int, float]:
    started = time.perf_counter()
    try:
        response = await client.post(url + "/v1/ask", json={"question": question})
        cost = float(response.json().get("cost_usd", 0.0)) if response.is_success else 0.0
        status = response.status_code
    except (httpx.HTTPError, ValueError):
        status, cost = 0, 0.0  # no answer at all (timeout, connection refused)
    return time.perf_counter() - started, status, cost


async def run(url: str, requests: int, concurrency: int, key: str | None, timeout: float,
              deadline: float) -> dict:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(headers=headers, timeout=timeout, limits=limits) as client:
        async def bounded(i: int) -> tuple[float, int, float]:
            async with gate:
                return await one(client, url.rstrip("/"), QUESTIONS[i % len(QUESTIONS)])

        started = time.perf_counter()
        results = await asyncio.wait_for(
            asyncio.gather(*(bounded(i) for i in range(requests))), deadline)
        wall = time.perf_counter() - started
    latencies = sorted(r[0] for r in results if r[1] == 200)
    statuses: dict[str, int] = {}
    for _, status, _ in results:
        statuses[str(status)] = statuses.get(str(status), 0) + 1

    def pct(p: float) -> float | None:
        if not latencies:
            return None
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 1)

    return {"url": url, "requests": requests, "concurrency": concurrency,
            "ok": len(latencies), "errors": requests - len(latencies), "statuses": statuses,
            "p50_ms": pct(0.50), "p95_ms": pct(0.95), "max_ms": pct(1.0),
            "mean_ms": round(statistics.fmean(latencies) * 1000, 1) if latencies else None,
            "throughput_rps": round(len(latencies) / wall, 2) if wall else None,
            "cost_usd": round(sum(r[2] for r in results), 6), "wall_s": round(wall, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--requests", "-n", type=int, default=40)
    parser.add_argument("--concurrency", "-c", type=int, default=10)
    parser.add_argument("--key", default=None)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    parser.add_argument("--deadline", type=float, default=900.0, help="seconds overall")
    args = parser.parse_args(argv)
    if not 1 <= args.requests <= 10_000 or not 1 <= args.concurrency <= 500:
        parser.error("--requests must be 1..10000 and --concurrency 1..500")
    try:
        report = asyncio.run(run(args.url, args.requests, args.concurrency,
                                 args.key or first_key(), args.timeout, args.deadline))
    except TimeoutError:
        print(f"error: the load test passed its {args.deadline:g} s deadline", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2))
    return 0 if report["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
