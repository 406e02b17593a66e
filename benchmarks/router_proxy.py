"""Issue 3: the router proxy's overhead, measured side by side in one run.

Against a fast OpenAI-compatible backend on 127.0.0.1 (a canned chat completion, its own
process), at 1, 16 and 64 concurrent clients (asyncio + httpx, a fixed number of
requests each):

- the proxy's added latency: p50 through `agentcycle router serve` minus p50 direct
  (goal < 2 ms);
- its throughput against calling the backend directly (goal >= 0.9x);
- its throughput against the LiteLLM proxy routing to the same backend (goal >= 1.5x);
- fault run: two backends, the primary killed mid-load (goal: zero failed requests).

Every server runs in its own process; the load generator, the proxy and the backend
share this machine's cores, so absolute numbers are the machine's, ratios are the point.

Run: `flock /tmp/bench.lock python benchmarks/router_proxy.py [--requests 1000]
[--litellm PATH/TO/litellm] [--litellm-transport] [--fast-io DIR]`; `--profile direct`
profiles the proxy with pyinstrument instead.

The LiteLLM proxy needs its proxy dependencies, which conflict with ours (rich<14,
websockets<16) and whose `litellm-proxy` package is not on PyPI for 1.110.2: install
them in a separate venv (litellm==1.110.2 fastapi uvicorn backoff apscheduler orjson
pyjwt python-multipart cryptography rq redis pynacl fastapi-sso mcp httpx2 polars
expression semver gunicorn uvloop tomlkit inquirerpy restrictedpython azure-identity
azure-storage-blob soundfile litellm-enterprise litellm-proxy-extras 'rich<14'
'websockets<16') and pass its `litellm`. Without one that starts, the LiteLLM rows are
left out and the reason printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
KEY = "sk-bench-key"  # both proxies check it, as deployed; the backend ignores it
HEADERS = {"Authorization": f"Bearer {KEY}"}
BODY = {"model": "default", "max_tokens": 16,
        "messages": [{"role": "user", "content": "What is the deposit cap?"}]}
CANNED = (b'{"id":"chatcmpl-bench","object":"chat.completion","created":1764000000,'
          b'"model":"canned","choices":[{"index":0,"finish_reason":"stop","message":'
          b'{"role":"assistant","content":"A deposit may not exceed 1.5 months\' rent."}}],'
          b'"usage":{"prompt_tokens":12,"completion_tokens":11,"total_tokens":23}}')


# --- the fast backend (run as `router_proxy.py --serve-backend PORT`) -------------------

def serve_backend(port: int) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    async def chat(request):
        await request.body()
        return Response(CANNED, media_type="application/json")

    async def ok(request):
        return Response(b'{"status":"ok"}', media_type="application/json")

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                            Route("/health", ok), Route("/v1/models", ok)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# --- processes ------------------------------------------------------------------------

def free_port() -> int:
    from agentcycle.serving.server import free_port as pick

    return pick()


@contextlib.contextmanager
def process(args: list[str], health_url: str, log: Path, env: dict | None = None,
            timeout: float = 120.0, stop_signal: int = signal.SIGTERM):
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{args[0]} exited with {proc.returncode}: "
                                   f"{log.read_text(errors='replace')[-600:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(health_url, timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{args[0]} did not become healthy in {timeout:.0f} s")
            time.sleep(0.3)
        yield proc
    finally:
        stop(proc, stop_signal)


def stop(proc: subprocess.Popen, first: int = signal.SIGTERM) -> None:
    if first == signal.SIGINT:  # uvicorn's first Ctrl-C drains, the second exits
        for _ in range(2):
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def backend_process(port: int, folder: Path, name: str):
    return process([sys.executable, __file__, "--serve-backend", str(port)],
                   f"http://127.0.0.1:{port}/health", folder / f"{name}.log")


def proxy_process(backend_ports: list[int], folder: Path, transport: str = "direct",
                  profile: Path | None = None, pythonpath: str | None = None):
    port = free_port()
    names = [f"b{i}" for i in range(len(backend_ports))]
    lines = ["backends:"]
    for name, bport in zip(names, backend_ports, strict=True):
        lines.append(f"  {name}: {{model: openai/canned, api_base: http://127.0.0.1:{bport}/v1, "
                     f"local: true, transport: {transport}, timeout_s: 10}}")
    lines += ["routes:", f"  default: {{backends: [{', '.join(names)}]}}", "tracing: false",
              f"db_path: {folder / 'router.db'}", "proxy_key_env: BENCH_PROXY_KEY"]
    config = folder / f"router-{port}.yaml"
    config.write_text("\n".join(lines) + "\n")
    agentcycle = [str(Path(sys.executable).parent / "agentcycle")]
    if profile:  # pyinstrument writes its report when uvicorn exits on SIGTERM
        agentcycle = [sys.executable, "-m", "pyinstrument", "-r", "text", "--show-all",
                      "-o", str(profile),
                      *agentcycle]
    return port, process([*agentcycle, "router", "serve", "--config", str(config), "--port",
                          str(port)], f"http://127.0.0.1:{port}/health",
                         folder / f"proxy-{port}.log",
                         env={"AGENTCYCLE_HOME": str(folder / "home"), "BENCH_PROXY_KEY": KEY,
                              **({"PYTHONPATH": pythonpath} if pythonpath else {})},
                         stop_signal=signal.SIGINT if profile else signal.SIGTERM)


def litellm_process(litellm: str, backend_port: int, folder: Path):
    port = free_port()
    config = folder / "litellm.yaml"
    config.write_text(
        "model_list:\n  - model_name: default\n    litellm_params:\n"
        f"      model: openai/canned\n      api_base: http://127.0.0.1:{backend_port}/v1\n"
        f"      api_key: none\ngeneral_settings:\n  master_key: {KEY}\n")
    return port, process([litellm, "--config", str(config), "--port", str(port),
                          "--host", "127.0.0.1", "--num_workers", "1", "--telemetry", "False"],
                         f"http://127.0.0.1:{port}/health/liveliness", folder / "litellm.log",
                         env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"},
                         timeout=180)


# --- load -------------------------------------------------------------------------------

@dataclass
class Load:
    latencies: list[float]
    failed: int
    seconds: float
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU seconds by process

    def cpu_ms(self, who: str) -> float:
        return 1000 * self.cpu_s.get(who, 0.0) / max(1, len(self.latencies) + self.failed)

    @property
    def rps(self) -> float:
        return (len(self.latencies) + self.failed) / self.seconds

    def p(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


async def drive(url: str, requests: int, concurrency: int, on_progress=None) -> Load:
    """``concurrency`` clients send ``requests`` in all, each one after its last."""
    latencies: list[float] = []
    failed = 0
    sent = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30, headers=HEADERS) as client:
        async def client_loop():
            nonlocal sent, failed
            while sent < requests:
                sent += 1
                started = time.perf_counter()
                try:
                    response = await client.post(url, json=BODY)
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - started)
                else:
                    failed += 1
                if on_progress:
                    on_progress(len(latencies) + failed)

        started = time.perf_counter()
        await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    return Load(latencies, failed, time.perf_counter() - started)


def run_load(url: str, requests: int, concurrency: int, on_progress=None,
             watch: dict[str, int] | None = None) -> Load:
    """One load run; ``watch``: processes (name -> pid) whose CPU time it costs."""
    import psutil

    procs = {name: psutil.Process(pid) for name, pid in (watch or {}).items()}
    procs["client"] = psutil.Process()

    def cpu() -> dict[str, float]:
        return {name: sum(p.cpu_times()[:2]) for name, p in procs.items()}

    before = cpu()
    load = asyncio.run(drive(url, requests, concurrency, on_progress))
    load.cpu_s = {name: t - before[name] for name, t in cpu().items()}
    return load


# --- the benchmark ------------------------------------------------------------------------

def find_litellm(given: str | None) -> tuple[str | None, str]:
    candidate = given or shutil.which("litellm", path=str(Path(sys.executable).parent))
    if not candidate:
        return None, "no `litellm` command (pip install 'litellm[proxy]')"
    try:
        check = subprocess.run([candidate, "--help"], capture_output=True, text=True,
                               timeout=120)
    except OSError as exc:
        return None, f"cannot run {candidate}: {exc.strerror}"
    if check.returncode != 0:
        last = (check.stderr or check.stdout).strip().splitlines()[-1:] or ["?"]
        return None, f"`litellm --help` failed: {last[0][:200]}"
    return candidate, ""


def overhead(args, folder: Path, console) -> list[dict]:
    from rich.table import Table

    backend_port = free_port()
    litellm, why_not = find_litellm(args.litellm)
    rows = []
    with contextlib.ExitStack() as stack:
        backend = stack.enter_context(backend_process(backend_port, folder, "backend"))
        targets = {"direct": f"http://127.0.0.1:{backend_port}/v1/chat/completions"}
        pids = {"direct": {"backend": backend.pid}}
        port, proxy = proxy_process([backend_port], folder)
        pids["agentcycle"] = {"backend": backend.pid, "proxy": stack.enter_context(proxy).pid}
        targets["agentcycle"] = f"http://127.0.0.1:{port}/v1/chat/completions"
        if args.litellm_transport:  # the config default: calls through the LiteLLM SDK
            port, proxy = proxy_process([backend_port], folder, "litellm")
            pids["agentcycle/sdk"] = {"backend": backend.pid,
                                      "proxy": stack.enter_context(proxy).pid}
            targets["agentcycle/sdk"] = f"http://127.0.0.1:{port}/v1/chat/completions"
        if args.fast_io:  # uvicorn picks uvloop and httptools when it can import them
            port, proxy = proxy_process([backend_port], folder, pythonpath=args.fast_io)
            pids["agentcycle+uvloop"] = {"backend": backend.pid,
                                         "proxy": stack.enter_context(proxy).pid}
            targets["agentcycle+uvloop"] = f"http://127.0.0.1:{port}/v1/chat/completions"
        if litellm:
            try:
                port, lite = litellm_process(litellm, backend_port, folder)
                pids["litellm"] = {"backend": backend.pid, "proxy": stack.enter_context(lite).pid}
                targets["litellm"] = f"http://127.0.0.1:{port}/v1/chat/completions"
            except RuntimeError as exc:
                why_not = f"the LiteLLM proxy did not start: {str(exc)[:300]}"
        if why_not:
            console.print(f"[yellow]LiteLLM proxy left out:[/yellow] {why_not}")
        for url in targets.values():  # warm every path (connections, imports, JIT caches)
            run_load(url, 200, 8)
        for concurrency in args.concurrency:
            loads: dict[str, list[Load]] = {name: [] for name in targets}
            for _ in range(args.rounds):  # interleaved, so drift hits every target alike
                for name, url in targets.items():
                    loads[name].append(run_load(url, args.requests // args.rounds, concurrency,
                                                watch=pids[name]))
            rows.append({"concurrency": concurrency, **{
                name: _merge(parts) for name, parts in loads.items()}})
    table = Table(title=f"router proxy vs direct vs LiteLLM proxy ({args.requests} requests "
                        "per cell, canned backend on 127.0.0.1)")
    for column in ("clients", "target", "p50 ms", "p95 ms", "req/s", "failed",
                   "added p50 ms", "rps vs direct", "rps vs LiteLLM",
                   "CPU ms/req proxy", "backend", "client"):
        table.add_column(column, justify="right")
    for row in rows:
        direct, lite = row["direct"], row.get("litellm")
        for name in targets:
            load = row[name]
            table.add_row(str(row["concurrency"]), name, f"{load.p(0.5):.2f}",
                          f"{load.p(0.95):.2f}", f"{load.rps:.0f}", str(load.failed),
                          "" if name == "direct" else f"{load.p(0.5) - direct.p(0.5):+.2f}",
                          "" if name == "direct" else f"{load.rps / direct.rps:.2f}x",
                          f"{row[name].rps / lite.rps:.2f}x"
                          if name.startswith("agentcycle") and lite else "",
                          "" if name == "direct" else f"{load.cpu_ms('proxy'):.2f}",
                          f"{load.cpu_ms('backend'):.2f}", f"{load.cpu_ms('client'):.2f}")
    console.print(table)
    return rows


def _merge(parts: list[Load]) -> Load:
    return Load([x for p in parts for x in p.latencies], sum(p.failed for p in parts),
                sum(p.seconds for p in parts),
                {k: sum(p.cpu_s.get(k, 0.0) for p in parts) for k in parts[0].cpu_s})


def fault(args, folder: Path, console) -> Load:
    """Two backends behind the proxy; the primary is killed a third of the way in."""
    primary_port, secondary_port = free_port(), free_port()
    with contextlib.ExitStack() as stack:
        primary = stack.enter_context(backend_process(primary_port, folder, "primary"))
        stack.enter_context(backend_process(secondary_port, folder, "secondary"))
        port, proxy = proxy_process([primary_port, secondary_port], folder)
        stack.enter_context(proxy)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        run_load(url, 100, 4)
        kill_at = args.requests // 3
        killed = False

        def on_progress(done: int) -> None:
            nonlocal killed
            if not killed and done >= kill_at:
                killed = True
                os.killpg(primary.pid, signal.SIGKILL)

        load = run_load(url, args.requests, 16, on_progress)
    console.print(f"fault run: {args.requests} requests at 16 clients, primary backend killed "
                  f"(SIGKILL) after {kill_at}: [bold]{load.failed} failed[/bold] (goal 0); "
                  f"p50 {load.p(0.5):.2f} ms, p95 {load.p(0.95):.2f} ms, max "
                  f"{max(load.latencies) * 1000:.0f} ms, {load.rps:.0f} req/s")
    return load


def profile_proxy(args, folder: Path, console) -> None:
    """The proxy under pyinstrument while 16 clients send requests through it."""
    backend_port = free_port()
    report = folder / "proxy-profile.txt"
    with backend_process(backend_port, folder, "backend"):
        port, proxy = proxy_process([backend_port], folder, args.profile_transport, report)
        with proxy:
            load = run_load(f"http://127.0.0.1:{port}/v1/chat/completions", args.requests, 16)
    console.print(f"profiled {args.requests} requests ({load.rps:.0f} req/s under the "
                  f"profiler): {report}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve-backend", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--requests", type=int, default=2000, help="per target and level")
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 16, 64])
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per cell")
    parser.add_argument("--litellm", help="the `litellm` command (default: next to python)")
    parser.add_argument("--skip-fault", action="store_true")
    parser.add_argument("--profile", choices=["direct", "litellm"], dest="profile_transport",
                        help="only profile the proxy (pyinstrument) with this transport")
    parser.add_argument("--fast-io", metavar="DIR",
                        help="also measure the proxy with uvloop + httptools importable from DIR "
                             "(pip install --target DIR uvloop httptools)")
    parser.add_argument("--litellm-transport", action="store_true",
                        help="also measure the proxy with `transport: litellm` (the default)")
    args = parser.parse_args()
    if args.serve_backend:
        serve_backend(args.serve_backend)
        return 0
    from rich.console import Console

    console = Console(width=160)
    folder = Path(tempfile.mkdtemp(prefix="agentcycle-proxy-bench-"))
    if args.profile_transport:
        profile_proxy(args, folder, console)
        return 0
    overhead(args, folder, console)
    if not args.skip_fault:
        fault(args, folder, console)
    console.print(f"logs: {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
