"""The coordinator: plan -> dispatch to the workers over NATS -> merge one result.

``mode="queue"`` (default) publishes each subtask to the JetStream work queue (message
id = task id, so a retried publish is deduplicated) and watches the results bucket;
``mode="request"`` sends each subtask as a request/reply call, for short calls.
Every message carries the run's W3C ``traceparent``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from agentcycle.agents import AgentResult, BaseAgent, Step
from agentcycle.agents._result import elapsed_ms
from agentcycle.agents.multi.planner import Planner, split_questions
from agentcycle.agents.multi.protocol import (
    MSG_ID,
    TRACEPARENT,
    QueueConfig,
    Task,
    ensure_queue,
    failed_result,
    new_job_id,
)
from agentcycle.agents.multi.reporter import Reporter, merge_results
from agentcycle.errors import ConfigError
from agentcycle.messaging.tracecontext import current_traceparent, new_traceparent, trace_id_of


class MultiAgent(BaseAgent):
    """Split a task, let a pool of workers answer the parts, merge their answers."""

    kind = "multi"

    def __init__(self, settings: Any = None, *, config: QueueConfig | None = None,
                 planner: Planner = split_questions, reporter: Reporter = merge_results,
                 mode: str = "queue", timeout: float = 300.0, url: str | None = None,
                 trace: bool = True):
        if mode not in ("queue", "request"):
            raise ConfigError(f"mode {mode!r}: use 'queue' or 'request'")
        self.settings, self.config = settings, config or QueueConfig()
        self.planner, self.reporter, self.mode = planner, reporter, mode
        self.timeout, self.trace, self._url = timeout, trace, url

    @property
    def url(self) -> str:
        if self._url is None:
            from agentcycle.messaging import nats_url
            from agentcycle.settings import Settings

            self._url = nats_url(self.settings or Settings())
        return self._url

    async def arun(self, task: str, **options: Any) -> AgentResult:
        started = time.perf_counter()
        with self._span(task) as root:
            subtasks = self.planner(task)
            if not subtasks:
                raise ConfigError("the planner returned no subtasks for the task")
            traceparent = current_traceparent() if self.trace else new_traceparent()
            results = await self.dispatch(subtasks, traceparent, **options)
            result = self.reporter(task, subtasks, results)
            result.kind, result.trace_id = "multi", trace_id_of(traceparent)
            result.latency_ms = elapsed_ms(started)
            planner_usage = getattr(self.planner, "last_completion", None)
            if planner_usage is not None:
                result.prompt_tokens += planner_usage.prompt_tokens
                result.completion_tokens += planner_usage.completion_tokens
                result.cost_usd += planner_usage.cost_usd
            if root is not None:
                root.set_outputs({"answer": result.answer, "subtasks": len(subtasks)})
        return result

    async def dispatch(self, subtasks: list[str], traceparent: str,
                       **options: Any) -> list[AgentResult]:
        """Send ``subtasks`` to the pool; their results in order (a failed result for one
        that errored or did not finish within ``timeout``)."""
        from agentcycle.messaging import connect

        job = new_job_id()
        tasks = [Task.new(job, i, text, **options) for i, text in enumerate(subtasks)]
        nc = await connect(self.url, name="agentcycle-coordinator")
        try:
            if self.mode == "request":
                return list(await asyncio.gather(*(self._request(nc, t, traceparent)
                                                   for t in tasks)))
            return await self._queue(nc, tasks, traceparent)
        finally:
            with contextlib.suppress(Exception):
                await nc.close()

    async def _request(self, nc: Any, task: Task, traceparent: str) -> AgentResult:
        from nats.errors import NoRespondersError, TimeoutError

        try:
            reply = await nc.request(self.config.rpc_subject, task.model_dump_json().encode(),
                                     timeout=self.timeout, headers={TRACEPARENT: traceparent})
        except NoRespondersError:
            return failed_result(f"no worker serves pool {self.config.pool!r} "
                                 f"({self.config.rpc_subject})", subtask=task.index)
        except TimeoutError:
            return failed_result(f"no reply within {self.timeout:g}s", subtask=task.index)
        return AgentResult.model_validate_json(reply.data)

    async def _queue(self, nc: Any, tasks: list[Task], traceparent: str) -> list[AgentResult]:
        from agentcycle.messaging.client import retry_transient

        js = nc.jetstream()
        # each step is idempotent: retried while NATS restarts, within the job's timeout
        kv = await retry_transient(lambda: ensure_queue(js, self.config), self.timeout)
        results: dict[str, AgentResult] = {}
        watcher = await retry_transient(  # before publishing: miss nothing
            lambda: kv.watch(f"{tasks[0].job}.*"), self.timeout)
        try:
            await retry_transient(  # the task id is the message id: stored once
                lambda: publish_tasks(js, self.config, tasks, traceparent), self.timeout)
            await _collect(watcher, results, len(tasks), self.timeout, kv,
                           [t.id for t in tasks])
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()
        return [results.get(t.id) or failed_result(
            f"no result within {self.timeout:g}s (are workers running for pool "
            f"{self.config.pool!r}?)", subtask=t.index) for t in tasks]

    @contextlib.contextmanager
    def _span(self, task: str) -> Any:
        if not self.trace:
            yield None
            return
        from agentcycle.observe.tracing import span

        with span("multi agent", "AGENT", inputs={"task": task},
                  attributes={"agentcycle.pool": self.config.pool, "agentcycle.mode": self.mode},
                  settings=self.settings) as root:
            yield root


async def publish_tasks(js: Any, config: QueueConfig, tasks: list[Task],
                        traceparent: str) -> None:
    """Put ``tasks`` on the work queue; the task id is the JetStream message id, so
    publishing one twice (a retry) stores it once."""
    for task in tasks:
        await js.publish(config.task_subject, task.model_dump_json().encode(),
                         headers={MSG_ID: task.id, TRACEPARENT: traceparent})


async def _collect(watcher: Any, results: dict[str, AgentResult], expected: int,
                   timeout: float, kv: Any = None, keys: list[str] | None = None) -> None:
    """Results from ``watcher`` until ``expected`` are in or ``timeout`` passes. A watcher
    quiet for ``_POLL_S`` (after a NATS restart nats-py takes up to 4 missed heartbeats,
    ~20 s, to renew it) makes ``kv`` be read for the ``keys`` still missing."""
    deadline = time.monotonic() + timeout
    while len(results) < expected:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        try:
            entry = await watcher.updates(timeout=min(left, _POLL_S))
        except Exception:  # nats TimeoutError: quiet, or a watcher lost in a restart
            if kv is not None and keys:
                await _read_missing(kv, keys, results)
            continue
        if entry is not None and entry.value:
            results[entry.key] = AgentResult.model_validate_json(entry.value)


_POLL_S = 2.0


async def _read_missing(kv: Any, keys: list[str], results: dict[str, AgentResult]) -> None:
    for key in keys:
        if key in results:
            continue
        try:
            entry = await kv.get(key)
        except Exception:  # not there yet (KeyNotFoundError), or NATS still restarting
            continue
        if entry is not None and entry.value:
            results[key] = AgentResult.model_validate_json(entry.value)


# A step for each subtask is added by the reporter; re-exported for user reporters.
__all__ = ["MultiAgent", "Step", "publish_tasks"]
