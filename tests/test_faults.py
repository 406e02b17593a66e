"""Issue 11 fault runs small enough for the suite (benchmarks/fault_runs.py measures
them at size): NATS stopped and started again on the same port and store while a
coordinator's tasks are in flight on the JetStream work queue."""

from __future__ import annotations

import asyncio
import threading
import time

from agentcycle.agents import AgentResult, BaseAgent
from agentcycle.agents.multi import MultiAgent, QueueConfig, run_workers
from restartable_nats import RestartableNats


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
