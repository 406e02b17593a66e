"""Issue 11 fault runs small enough for the suite (benchmarks/fault_runs.py measures
them at size): the router's first backend SIGKILLed mid-load; NATS stopped and started
again on the same port and store while a coordinator's tasks are in flight."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from agentcycle.agents import AgentResult, BaseAgent
from agentcycle.agents.multi import MultiAgent, QueueConfig, run_workers
from agentcycle.router import Backend, Router
from agentcycle.router.proxy import create_proxy_app
from agentcycle.serving.server import free_port
from helpers import BackgroundServer, openai_fake_app
from restartable_nats import RestartableNats

PRIMARY = """import sys, uvicorn
from helpers import openai_fake_app
uvicorn.run(openai_fake_app("first", delay_s=0.1), host="127.0.0.1", port=int(sys.argv[1]),
            log_level="error")
"""


def test_first_backend_killed_mid_load_fails_no_request():
    port = free_port()
    primary = subprocess.Popen([sys.executable, "-c", PRIMARY, str(port)],
                               cwd=Path(__file__).parent, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert primary.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
        with BackgroundServer(openai_fake_app("second")) as second:
            backends = [Backend(name=name, model=f"openai/{name}", api_base=f"{url}/v1",
                                api_key="k", transport="direct", timeout_s=5, local=True)
                        for name, url in (("first", f"http://127.0.0.1:{port}"),
                                          ("second", second.url))]
            router = Router(backends, routes={"default": []},  # every backend, in order
                            tracing=False, log_path=False)
            with BackgroundServer(create_proxy_app(router)) as proxy:
                done: list[tuple[int, str]] = []

                def ask(i: int) -> None:
                    reply = http.post(f"{proxy.url}/v1/chat/completions",
                                      json={"model": "default", "messages": [
                                           {"role": "user", "content": f"q{i}"}]})
                    done.append((reply.status_code, reply.headers.get(
                        "x-agentcycle-backend", "")))
                    if len(done) == 12:  # 8 more are in flight on the first backend
                        primary.send_signal(signal.SIGKILL)

                with ThreadPoolExecutor(8) as pool, httpx.Client(timeout=30) as http:
                    list(pool.map(ask, range(40)))
            router.close()
    finally:
        primary.kill()
        primary.wait()
    assert [status for status, _ in done] == [200] * 40
    served = [backend for _, backend in done]
    assert served[:12].count("first") >= 10 and served[-16:] == ["second"] * 16


class Slow(BaseAgent):
    """A scripted agent: answers after 50 ms, records every task it ran."""

    kind = "scripted"

    def __init__(self) -> None:
        self.ran: list[str] = []

    async def arun(self, task: str, **options) -> AgentResult:
        await asyncio.sleep(0.05)
        self.ran.append(task)
        return AgentResult(answer=f"answer to {task}", kind="scripted")


def test_nats_restarted_mid_run_loses_no_task(tmp_path):
    jobs, parts = 6, 5
    config = QueueConfig(pool="restart", ack_wait=2.0)
    agents = [Slow(), Slow()]
    with RestartableNats(tmp_path / "nats") as server, \
            run_workers(agents, server.url, config, trace=False):
        # 15 s: the jobs must not wait for nats-py to renew a KV watcher lost in the
        # restart (~20 s); the coordinator reads the missing results itself
        coordinator = MultiAgent(config=config, url=server.url, trace=False, timeout=15,
                                 planner=lambda task: [f"{task} part {i}" for i in range(parts)])
        finished: list[float] = []
        restarted = threading.Event()

        def restart() -> None:
            server.stop()
            time.sleep(1.0)
            server.start()
            restarted.set()

        async def run_jobs() -> list[AgentResult]:
            async def one(job: int) -> AgentResult:
                result = await coordinator.arun(f"job {job}")
                finished.append(time.monotonic())
                if len(finished) == 2:  # the other jobs' tasks are queued or running
                    threading.Thread(target=restart, daemon=True).start()
                return result

            sem = asyncio.Semaphore(2)

            async def bounded(job: int) -> AgentResult:
                async with sem:
                    return await one(job)

            return await asyncio.gather(*(bounded(j) for j in range(jobs)))

        results = asyncio.run(run_jobs())
        assert restarted.wait(20)
    assert [r.metadata["failed"] for r in results] == [[]] * jobs
    for job, result in enumerate(results):  # every task answered, by its own answer
        assert [a["answer"] for a in result.metadata["subtasks"]] == [
            f"answer to job {job} part {i}" for i in range(parts)]
    # a task whose result or ack was lost with the server may run again (at least once);
    # the results bucket keeps the first answer only
    ran = [task for agent in agents for task in agent.ran]
    assert set(ran) == {f"job {j} part {i}" for j in range(jobs) for i in range(parts)}
