"""Multi-agent over a real nats-server on 127.0.0.1: request/reply, queue groups, the
JetStream work queue (redelivery after SIGKILL, dead letters, dedupe), one trace id,
and MultiAgent end to end. Worker processes run `agentcycle multi worker`."""

from __future__ import annotations

import asyncio
import json
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest
from typer.testing import CliRunner

from agentcycle.agents import AgentResult, BaseAgent, Source, Step, ToolCallRecord
from agentcycle.agents.multi import (
    MultiAgent,
    QueueConfig,
    Task,
    ensure_queue,
    new_job_id,
    publish_tasks,
    run_workers,
    split_questions,
)
from agentcycle.errors import ConfigError, ServiceError
from agentcycle.messaging import NatsServer, connect, new_traceparent, parse_traceparent
from agentcycle.plugins import load_agent


class Scripted(BaseAgent):
    """A deterministic agent: answers, cites, calls a tool, counts tokens; sleeps
    ``options['delay']`` when ``slow``; raises when ``fail``."""

    kind = "scripted"

    def __init__(self, name: str, slow: bool = True, fail: bool = False):
        self.name, self.slow, self.fail = name, slow, fail
        self.seen: list[tuple[str, dict]] = []

    async def arun(self, task: str, **options) -> AgentResult:
        self.seen.append((task, options))
        if self.slow:
            await asyncio.sleep(float(options.get("delay", 0)))
        if self.fail:
            raise RuntimeError(f"{self.name} always fails")
        return AgentResult(
            answer=f"{self.name} answers: {task}", kind="scripted", model=f"model-{self.name}",
            sources=[Source(source=f"{self.name}.md", heading=task[:10])],
            tool_calls=[ToolCallRecord(name="lookup", arguments={"q": task})],
            steps=[Step(kind="llm", name=f"{self.name} generate")],
            prompt_tokens=10, completion_tokens=5, cost_usd=0.001)


def scripted_agent() -> Scripted:  # the factory worker processes load from this file
    return Scripted("process")


def failing_agent() -> Scripted:
    return Scripted("process", fail=True)


@pytest.fixture(scope="session")
def nats(tmp_path_factory):
    with NatsServer(tmp_path_factory.mktemp("nats")) as server:
        yield server.url


@pytest.fixture
def config() -> QueueConfig:  # a pool per test: tests never see each other's tasks
    return QueueConfig(pool=f"t{uuid.uuid4().hex[:8]}", ack_wait=1.0, max_deliver=2)


class WorkerProcess:
    """`agentcycle multi worker` as a child process, its event lines in a queue."""

    def __init__(self, url: str, config: QueueConfig, name: str, factory: str = "scripted_agent"):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "agentcycle", "multi", "worker", "--agent",
             f"{__file__}:{factory}", "--pool", config.pool, "--url", url, "--name", name,
             "--ack-wait", str(config.ack_wait), "--max-deliver", str(config.max_deliver),
             "--no-trace"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_for("worker ")

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line.strip())

    def wait_for(self, prefix: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.process.poll() is not None:
                    raise AssertionError(f"worker exited ({self.process.returncode})") from None
                continue
            if line.startswith(prefix):
                return line
        raise AssertionError(f"worker never printed {prefix!r}")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)


async def _watch_results(url: str, config: QueueConfig, job: str, settle: float,
                         until: int, timeout: float = 30) -> dict[str, list[AgentResult]]:
    """Every update to the job's result keys (a duplicate would show as a second one),
    until ``until`` keys have one and ``settle`` seconds pass without news."""
    nc = await connect(url)
    kv = await ensure_queue(nc.jetstream(), config)
    watcher = await kv.watch(f"{job}.*")
    seen: dict[str, list[AgentResult]] = {}
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            wait = settle if len(seen) >= until else deadline - time.monotonic()
            try:
                entry = await watcher.updates(timeout=wait)
            except Exception:
                if len(seen) >= until:
                    break
                continue
            if entry is not None and entry.value:
                seen.setdefault(entry.key, []).append(AgentResult.model_validate_json(entry.value))
    finally:
        await watcher.stop()
        await nc.close()
    return seen


async def _publish(url: str, config: QueueConfig, tasks: list[Task],
                   traceparent: str | None = None) -> None:
    nc = await connect(url)
    js = nc.jetstream()
    await ensure_queue(js, config)
    await publish_tasks(js, config, tasks, traceparent or new_traceparent())
    await nc.close()


def test_request_reply_and_merged_result(nats, config):
    with run_workers([Scripted("a"), Scripted("b")], nats, config, trace=False):
        agent = MultiAgent(config=config, url=nats, mode="request", trace=False, timeout=10)
        result = agent.run("What is the deposit cap? How long is the notice period?")
    assert result.kind == "multi" and result.status == "completed"
    subtasks = result.metadata["subtasks"]
    assert [s["task"] for s in subtasks] == ["What is the deposit cap?",
                                            "How long is the notice period?"]
    for i, sub in enumerate(subtasks):  # each answer attributed to its subtask and worker
        assert sub["answer"].endswith(sub["task"]) and sub["worker"] in ("worker-0", "worker-1")
        assert f"{i + 1}. {sub['task']}" in result.answer and sub["answer"] in result.answer
    assert (result.prompt_tokens, result.completion_tokens) == (20, 10)
    assert result.cost_usd == pytest.approx(0.002)
    assert len(result.tool_calls) == 2 and len(result.sources) == 2
    assert [s.kind for s in result.steps].count("agent") == 2
    assert {s["trace_id"] for s in subtasks} == {result.trace_id}


def test_queue_group_shares_work(nats, config):
    workers = [Scripted("a"), Scripted("b")]
    with run_workers(workers, nats, config, trace=False):
        request = MultiAgent(config=config, url=nats, mode="request", trace=False,
                             planner=lambda task: [f"{task} {i}" for i in range(20)])
        request.run("q")
        queued = MultiAgent(config=config, url=nats, trace=False, timeout=20,
                            planner=lambda task: [f"{task} {i}" for i in range(8)])
        result = queued.run("slow", delay=0.1)
    assert all(w.seen for w in workers)  # both served request/reply calls ...
    assert len(result.metadata["workers"]) == 2  # ... and pulled from the work queue
    assert sum(len(w.seen) for w in workers) == 28


def test_redelivery_after_a_worker_is_killed_mid_task(nats, config):
    job = new_job_id()
    first = WorkerProcess(nats, config, "doomed")
    try:
        asyncio.run(_publish(nats, config, [Task.new(job, 0, "long task", delay=30)]))
        assert first.wait_for("started ").startswith(f"started {job}.0 delivery 1")
        time.sleep(1.5 * config.ack_wait)  # its heartbeats kept the task while it lived
        first.kill()
    finally:
        first.process.kill()
    rescuer = Scripted("rescuer", slow=False)
    with run_workers([rescuer], nats, config, names=["rescuer"], trace=False):
        seen = asyncio.run(_watch_results(nats, config, job, settle=2 * config.ack_wait,
                                          until=1))
    assert list(seen) == [f"{job}.0"] and len(seen[f"{job}.0"]) == 1  # exactly one result
    result = seen[f"{job}.0"][0]
    assert result.metadata["worker"] == "rescuer" and result.metadata["deliveries"] == 2
    assert result.answer == "rescuer answers: long task" and len(rescuer.seen) == 1
    assert asyncio.run(_stream_messages(nats, config)) == 0  # acked: gone from the queue


async def _stream_messages(url: str, config: QueueConfig) -> int:
    nc = await connect(url)
    info = await nc.jetstream().stream_info(config.task_stream)
    await nc.close()
    return info.state.messages


def test_dead_letter_after_max_deliver(nats, config):
    job = new_job_id()

    async def scenario() -> tuple[object, dict[str, list[AgentResult]]]:
        nc = await connect(nats)
        dead = await nc.subscribe(config.dead_subject)
        traceparent = new_traceparent()
        await _publish(nats, config, [Task.new(job, 0, "doomed")], traceparent)
        letter = await dead.next_msg(timeout=20)
        results = await _watch_results(nats, config, job, settle=1.5, until=1)
        await nc.close()
        return letter, results, traceparent

    failing = Scripted("bad", fail=True)
    with run_workers([failing], nats, config, trace=False):
        letter, results, traceparent = asyncio.run(scenario())
    body = json.loads(letter.data)
    assert body["task"]["id"] == f"{job}.0" and body["deliveries"] == config.max_deliver
    assert "RuntimeError: bad always fails" in body["error"]
    assert letter.headers["Agentcycle-Error"] == "RuntimeError: bad always fails"
    assert letter.headers["traceparent"] == traceparent
    assert len(failing.seen) == config.max_deliver  # retried, then given up
    (result,) = results[f"{job}.0"]
    assert result.status == "failed" and "dead-lettered after 2 deliveries" in result.error

    runner = CliRunner()
    from agentcycle.cli.main import app

    listed = runner.invoke(app, ["multi", "dead", "--pool", config.pool, "--url", nats,
                                 "--json"])
    assert listed.exit_code == 0, listed.output
    assert [d["task"]["id"] for d in json.loads(listed.output)] == [f"{job}.0"]


def test_dead_letter_when_the_last_attempt_dies(nats):
    """The worker dies on its only delivery: the MAX_DELIVERIES advisory dead-letters it."""
    config = QueueConfig(pool=f"t{uuid.uuid4().hex[:8]}", ack_wait=1.0, max_deliver=1)
    job = new_job_id()
    doomed = WorkerProcess(nats, config, "doomed")
    try:
        asyncio.run(_publish(nats, config, [Task.new(job, 0, "hang", delay=60)]))
        doomed.wait_for("started ")
        doomed.kill()
        with run_workers([Scripted("watcher", slow=False)], nats, config, trace=False):
            seen = asyncio.run(_watch_results(nats, config, job, settle=0.5, until=1))
    finally:
        doomed.process.kill()
    (result,) = seen[f"{job}.0"]
    assert result.status == "failed" and "no worker acknowledged it" in result.error


def test_duplicate_publish_yields_one_result(nats, config):
    job = new_job_id()
    task = Task.new(job, 0, "once")
    events: list[str] = []
    agent = Scripted("a", slow=False)
    with run_workers([agent], nats, config, trace=False,
                     on_event=lambda kind, t, n: events.append(kind)):
        asyncio.run(_publish(nats, config, [task, task]))  # same Nats-Msg-Id: stored once
        seen = asyncio.run(_watch_results(nats, config, job, settle=0.5, until=1))
        # republished under another message id (after the dedupe window, by a retrying
        # client): the worker finds the result and does not run the task again
        retry = task.model_copy()

        async def republish() -> None:
            nc = await connect(nats)
            await nc.jetstream().publish(config.task_subject, retry.model_dump_json().encode(),
                                         headers={"Nats-Msg-Id": "retry-" + task.id})
            await nc.close()

        asyncio.run(republish())
        again = asyncio.run(_watch_results(nats, config, job, settle=1.0, until=1))
    assert len(seen[task.id]) == 1 and len(again[task.id]) == 1
    assert len(agent.seen) == 1 and events.count("skipped") == 1


def test_traceparent_is_carried_to_every_worker(nats, config, settings):
    import mlflow

    headers: list[str] = []

    async def tap() -> None:
        nc = await connect(nats)

        async def record(msg):
            headers.append(msg.headers["traceparent"])

        await nc.subscribe(config.task_subject, cb=record)
        await nc.flush()
        ready.set()
        await stop.wait()
        await nc.close()

    ready, stop = threading.Event(), asyncio.Event()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(tap(),), daemon=True)
    thread.start()
    ready.wait(10)
    with run_workers([Scripted("a"), Scripted("b")], nats, config, settings=settings):
        agent = MultiAgent(settings, config=config, url=nats, timeout=20)
        result = agent.run("First question? Second question?")
    loop.call_soon_threadsafe(stop.set)
    thread.join(5)
    assert result.trace_id and result.trace_id.startswith("tr-")
    assert len(headers) == 2 and {f"tr-{parse_traceparent(h)[0]}" for h in headers} == \
        {result.trace_id}
    assert {s["trace_id"] for s in result.metadata["subtasks"]} == {result.trace_id}
    mlflow.flush_trace_async_logging()
    trace = mlflow.get_trace(result.trace_id)  # the workers' spans joined the one trace
    names = [s.name for s in trace.data.spans]
    assert "multi agent" in names and names.count(f"worker {config.pool}") == 2


def test_unreachable_nats_is_one_clear_error(config):
    agent = MultiAgent(config=config, url="nats://127.0.0.1:9", trace=False)
    with pytest.raises(ServiceError, match=r"NATS at nats://127\.0\.0\.1:9 is unreachable"):
        agent.run("anything?")
    from agentcycle.cli.main import app

    out = CliRunner().invoke(app, ["multi", "ask", "x?", "--url", "nats://127.0.0.1:9",
                                      "--no-trace"])
    assert out.exit_code == 1 and "error: NATS at nats://127.0.0.1:9 is unreachable" in \
        out.output


def test_no_workers_is_a_failed_result_not_a_hang(nats, config):
    result = MultiAgent(config=config, url=nats, mode="request", trace=False).run("q?")
    assert result.status == "failed" and "no worker serves pool" in result.error
    queued = MultiAgent(config=config, url=nats, trace=False, timeout=0.5).run("q?")
    assert queued.status == "failed" and "no result within 0.5s" in queued.error


def test_bad_agent_reference_is_one_clear_error():
    for reference, message in [("nope", "unknown agent 'nope'"),
                               ("no_such_module_xyz:make", "cannot import"),
                               ("json:no_such", "has no attribute 'no_such'"),
                               ("os:getcwd", "not an agent"),
                               ("/no/such/file.py:make", "no file")]:
        with pytest.raises(ConfigError, match=message):
            load_agent(reference)
    loaded = load_agent(f"{__file__}:scripted_agent")  # a file path, as a worker loads it
    assert type(loaded).__name__ == "Scripted" and loaded.name == "process"
    from agentcycle.cli.main import app

    out = CliRunner().invoke(app, ["multi", "worker", "--agent", "json:no_such"])
    assert out.exit_code == 1 and "error: --agent json:no_such" in out.output


def test_default_planner_splits_into_sub_questions():
    assert split_questions("What is the cap? When is notice due?") == [
        "What is the cap?", "When is notice due?"]
    assert split_questions("1. rent\n2. deposit\n3. notice") == ["rent", "deposit", "notice"]
    assert split_questions("What is the deposit cap and how long is notice?") == [
        "What is the deposit cap?", "How long is notice?"]
    assert split_questions("Summarize the lease.") == ["Summarize the lease."]
    assert split_questions("  ") == []


@pytest.mark.slow
def test_a_real_rag_agent_as_worker(nats, config, legal_agent, settings):
    with run_workers([legal_agent], nats, config, settings=settings):
        agent = MultiAgent(settings, config=config, url=nats, timeout=120)
        result = agent.run("What is the deposit cap? How much notice must a landlord give?")
    assert result.status == "completed" and len(result.metadata["subtasks"]) == 2
    assert all(s["kind"] == "rag" and s["answer"] for s in result.metadata["subtasks"])
    assert result.sources and result.prompt_tokens > 0 and result.model
