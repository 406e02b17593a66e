"""A worker: wraps any :class:`~agentcycle.agents.Agent` and serves a pool's tasks.

It answers request/reply calls (queue group: each call goes to one worker) and pulls
long tasks from the JetStream work queue (one durable consumer shared by the pool).
A task it is working on is kept alive with ``in_progress`` heartbeats; if the worker
dies, the task is redelivered after ``ack_wait``. A result is stored with KV ``create``
under the task id, so a redelivered task never yields a second result. After
``max_deliver`` failed attempts the task goes to the dead-letter subject with its error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from agentcycle.agents import Agent, AgentResult
from agentcycle.agents.multi.protocol import (
    DELIVERIES_HEADER,
    ERROR_HEADER,
    MSG_ID,
    TRACEPARENT,
    QueueConfig,
    Task,
    ensure_queue,
    failed_result,
)
from agentcycle.messaging.tracecontext import trace_id_of

log = logging.getLogger(__name__)
EventHook = Callable[[str, Task, int], None]  # (started|done|failed|dead|skipped, task, n)


class Worker:
    """Serve ``agent`` for one pool (``config``); ``concurrency`` tasks at a time."""

    def __init__(self, agent: Agent, config: QueueConfig | None = None, *,
                 name: str | None = None, concurrency: int = 1, trace: bool = True,
                 settings: Any = None, on_event: EventHook | None = None):
        self.agent, self.config = agent, config or QueueConfig()
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{id(self) % 10000}"
        self.concurrency, self.trace, self.settings = max(1, concurrency), trace, settings
        self.on_event = on_event
        self.stats = {"done": 0, "failed": 0, "dead": 0, "duplicates_suppressed": 0}
        self._slots = asyncio.Semaphore(self.concurrency)
        self._tasks: set[asyncio.Task] = set()
        self._subs: list[Any] = []
        self.nc: Any = None

    async def start(self, nc: Any) -> Worker:
        self.nc, self.js = nc, nc.jetstream()
        self.kv = await ensure_queue(self.js, self.config)
        self._subs.append(await nc.subscribe(self.config.rpc_subject, queue=self.config.pool,
                                             cb=self._spawn_request))
        self._subs.append(await nc.subscribe(self.config.max_deliveries_advisory,
                                             queue=f"{self.config.pool}-advisory",
                                             cb=self._on_advisory))
        self._pull = await self.js.pull_subscribe_bind(durable=self.config.consumer,
                                                       stream=self.config.task_stream)
        self._subs.append(self._pull)
        for _ in range(self.concurrency):
            self._keep(asyncio.create_task(self._pull_loop()))
        return self

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()

    async def serve(self, url: str, stop: asyncio.Event | None = None,
                    ready: Callable[[], None] | None = None) -> None:
        """Connect, serve until ``stop`` is set (or the task is cancelled), disconnect;
        ``ready`` is called once the worker is subscribed."""
        from agentcycle.messaging import connect

        nc = await connect(url, name=f"agentcycle-worker-{self.name}")
        try:
            await self.start(nc)
            await nc.flush()  # the subscriptions are at the server before we say ready
            if ready:
                ready()
            await (stop or asyncio.Event()).wait()
        finally:
            await self.stop()
            with contextlib.suppress(Exception):
                await nc.drain()

    # -- request/reply ---------------------------------------------------------------
    async def _spawn_request(self, msg: Any) -> None:
        # nats-py runs one subscription's callbacks in sequence: a task per call lets
        # ``concurrency`` calls run at once.
        self._keep(asyncio.create_task(self._on_request(msg)))

    async def _on_request(self, msg: Any) -> None:
        async with self._slots:
            try:
                task = Task.model_validate_json(msg.data)
            except ValueError as exc:
                await msg.respond(failed_result(f"malformed task: {exc}").model_dump_json()
                                  .encode())
                return
            traceparent = (msg.headers or {}).get(TRACEPARENT)
            try:
                result = await self._run_agent(task, traceparent, 1)
            except Exception as exc:
                result = failed_result(_describe(exc), trace_id_of(traceparent),
                                       worker=self.name)
                self._event("failed", task, 1)
            await msg.respond(result.model_dump_json().encode())

    # -- work queue ------------------------------------------------------------------
    async def _pull_loop(self) -> None:
        from nats.errors import TimeoutError as NatsTimeout

        while True:
            try:
                msgs = await self._pull.fetch(1, timeout=5)
            except NatsTimeout:
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # reconnecting, server restarting: try again
                log.debug("worker %s: fetch failed: %s", self.name, exc)
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                async with self._slots:
                    try:
                        await self._on_task(msg)
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:  # NATS went away mid-task: the unacked
                        # task is redelivered after ack_wait; this loop keeps pulling
                        log.warning("worker %s: task %s not acknowledged (%s): it will "
                                    "be redelivered", self.name, msg.metadata.sequence.stream,
                                    _describe(exc))

    async def _on_task(self, msg: Any) -> None:
        deliveries = msg.metadata.num_delivered
        try:
            task = Task.model_validate_json(msg.data)
        except ValueError:
            await msg.term()  # never deliverable: don't retry it
            return
        traceparent = (msg.headers or {}).get(TRACEPARENT)
        if await self._has_result(task.id):  # finished by a worker that died before its ack
            self._event("skipped", task, deliveries)
            await msg.ack()
            return
        heartbeat = asyncio.create_task(self._heartbeat(msg))
        try:
            result = await self._run_agent(task, traceparent, deliveries)
        except asyncio.CancelledError:  # stopping: hand the task back now, not at ack_wait
            with contextlib.suppress(Exception):
                await asyncio.shield(msg.nak())
            raise
        except Exception as exc:
            heartbeat.cancel()
            await self._failed(msg, task, traceparent, _describe(exc), deliveries)
            return
        finally:
            heartbeat.cancel()
        await self._store(task, result)
        await msg.ack()
        self._event("done", task, deliveries)

    async def _failed(self, msg: Any, task: Task, traceparent: str | None, error: str,
                      deliveries: int) -> None:
        if deliveries >= self.config.max_deliver:
            await self.dead_letter(task, traceparent, error, deliveries)
            await msg.ack()
            return
        self.stats["failed"] += 1
        self._event("failed", task, deliveries)
        await msg.nak(delay=min(0.2 * 2 ** (deliveries - 1), 5.0))  # back off, then retry

    async def _heartbeat(self, msg: Any) -> None:
        while True:  # tell JetStream we are alive, so a long task is not redelivered
            await asyncio.sleep(self.config.ack_wait / 3)
            with contextlib.suppress(Exception):
                await msg.in_progress()

    async def _on_advisory(self, msg: Any) -> None:
        """JetStream gave up redelivering (the last attempt's worker died or hung)."""
        from nats.js.errors import NotFoundError

        try:
            event = json.loads(msg.data)
            raw = await self.js.get_msg(self.config.task_stream, int(event["stream_seq"]))
            task = Task.model_validate_json(raw.data)
        except (NotFoundError, ValueError, KeyError):
            return
        deliveries = int(event.get("deliveries", self.config.max_deliver))
        if not await self._has_result(task.id):
            await self.dead_letter(task, (raw.headers or {}).get(TRACEPARENT),
                                   f"no worker acknowledged it in {deliveries} deliveries "
                                   f"(ack_wait {self.config.ack_wait:g}s): a worker died "
                                   "or hung", deliveries)
        with contextlib.suppress(Exception):
            await self.js.delete_msg(self.config.task_stream, raw.seq)

    async def dead_letter(self, task: Task, traceparent: str | None, error: str,
                          deliveries: int) -> None:
        """Publish ``task`` with its error to the dead-letter subject (once per task), and
        store a failed result so whoever waits for it learns why."""
        headers = {MSG_ID: f"dead-{task.id}", DELIVERIES_HEADER: str(deliveries),
                   ERROR_HEADER: " ".join(error.split())[:500]}  # headers: one line
        if traceparent:
            headers[TRACEPARENT] = traceparent
        body = {"task": task.model_dump(), "error": error, "deliveries": deliveries,
                "worker": self.name}
        await self.js.publish(self.config.dead_subject, json.dumps(body).encode(),
                              headers=headers)
        self.stats["dead"] += 1
        self._event("dead", task, deliveries)
        await self._store(task, failed_result(
            f"dead-lettered after {deliveries} deliveries: {error}", trace_id_of(traceparent),
            worker=self.name, deliveries=deliveries, subtask=task.index))

    # -- shared ------------------------------------------------------------------------
    async def _run_agent(self, task: Task, traceparent: str | None,
                         deliveries: int) -> AgentResult:
        self._event("started", task, deliveries)
        started = time.perf_counter()
        with self._traced(task, traceparent):
            if hasattr(self.agent, "arun"):
                result = await self.agent.arun(task.task, **task.options)
            else:
                result = await asyncio.to_thread(self.agent.run, task.task, **task.options)
        trace_id = trace_id_of(traceparent)
        if result.trace_id and result.trace_id != trace_id:
            result.metadata["agent_trace_id"] = result.trace_id
        result.trace_id = trace_id or result.trace_id
        result.metadata.update(worker=self.name, deliveries=deliveries, subtask=task.index,
                               worker_ms=round((time.perf_counter() - started) * 1000, 2))
        return result

    @contextlib.contextmanager
    def _traced(self, task: Task, traceparent: str | None) -> Any:
        if not (self.trace and traceparent):
            yield
            return
        from mlflow.tracing.distributed import set_tracing_context_from_http_request_headers

        from agentcycle.observe.tracing import span

        with set_tracing_context_from_http_request_headers({TRACEPARENT: traceparent}):
            with span(f"worker {self.config.pool}", "AGENT", inputs={"task": task.task},
                      attributes={"agentcycle.worker": self.name,
                                  "agentcycle.task_id": task.id},
                      settings=self.settings):
                yield

    async def _has_result(self, task_id: str) -> bool:
        from nats.js.errors import KeyNotFoundError

        try:
            await self.kv.get(task_id)
        except KeyNotFoundError:
            return False
        return True

    async def _store(self, task: Task, result: AgentResult) -> None:
        from nats.js.errors import KeyWrongLastSequenceError

        try:
            await self.kv.create(task.id, result.model_dump_json().encode())
            self.stats["done"] += result.status != "failed"
        except KeyWrongLastSequenceError:  # another attempt got there first: keep that one
            self.stats["duplicates_suppressed"] += 1

    def _event(self, kind: str, task: Task, deliveries: int) -> None:
        if self.on_event:
            self.on_event(kind, task, deliveries)

    def _keep(self, task: asyncio.Task) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
