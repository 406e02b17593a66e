"""What coordinator and workers agree on: subjects, the JetStream objects, the task.

For a pool named ``P`` under prefix ``agentcycle``:

- ``agentcycle.rpc.P``: request/reply, served by the workers' queue group ``P``;
- stream ``AGENTCYCLE_TASKS_P`` (WorkQueue retention) on ``agentcycle.tasks.P``, with one
  durable pull consumer ``P`` shared by every worker (``ack_wait``, ``max_deliver``);
- stream ``AGENTCYCLE_DEAD`` on ``agentcycle.dead.>``: tasks that failed ``max_deliver``
  times, with their error;
- KV bucket ``AGENTCYCLE_RESULTS``: one result per task id, written with ``create`` so a
  redelivered task can never produce a second result.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from agentcycle.agents import AgentResult
from agentcycle.errors import ConfigError

MSG_ID, TRACEPARENT = "Nats-Msg-Id", "traceparent"
ERROR_HEADER, DELIVERIES_HEADER = "Agentcycle-Error", "Agentcycle-Deliveries"
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class QueueConfig:
    """One pool of workers: its subjects and its redelivery policy."""

    pool: str = "default"
    prefix: str = "agentcycle"
    ack_wait: float = 30.0  # seconds without an ack (or a heartbeat) before redelivery
    max_deliver: int = 3  # attempts before the task goes to the dead-letter subject
    result_ttl: float = 24 * 3600.0

    def __post_init__(self) -> None:
        for field, value in (("pool", self.pool), ("prefix", self.prefix)):
            if not _NAME.match(value):
                raise ConfigError(f"{field} {value!r}: use letters, digits, '-' and '_' only")
        if self.ack_wait <= 0 or self.max_deliver < 1:
            raise ConfigError("ack_wait must be > 0 and max_deliver >= 1")

    @property
    def rpc_subject(self) -> str:
        return f"{self.prefix}.rpc.{self.pool}"

    @property
    def task_subject(self) -> str:
        return f"{self.prefix}.tasks.{self.pool}"

    @property
    def dead_subject(self) -> str:
        return f"{self.prefix}.dead.{self.pool}"

    @property
    def task_stream(self) -> str:
        return f"{self.prefix.upper()}_TASKS_{self.pool}"

    @property
    def dead_stream(self) -> str:
        return f"{self.prefix.upper()}_DEAD"

    @property
    def results_bucket(self) -> str:
        return f"{self.prefix.upper()}_RESULTS"

    @property
    def consumer(self) -> str:
        return self.pool

    @property
    def max_deliveries_advisory(self) -> str:
        return f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{self.task_stream}.{self.consumer}"


class Task(BaseModel):
    """One subtask on the wire."""

    id: str  # "<job>.<index>": the message id, the result key
    job: str
    index: int
    task: str
    options: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def new(cls, job: str, index: int, task: str, **options: Any) -> Task:
        return cls(id=f"{job}.{index}", job=job, index=index, task=task, options=options)


def new_job_id() -> str:
    return uuid.uuid4().hex


def failed_result(error: str, trace_id: str | None = None, **metadata: Any) -> AgentResult:
    return AgentResult(answer="", status="failed", error=error, trace_id=trace_id,
                       metadata=metadata)


async def ensure_queue(js: Any, config: QueueConfig) -> Any:
    """Create (or update to ``config``) the task stream, its consumer, the dead-letter
    stream and the results bucket; returns the results KV. Safe to call from every
    coordinator and worker: JetStream's create is idempotent for an equal config."""
    from nats.js.api import (
        AckPolicy,
        ConsumerConfig,
        KeyValueConfig,
        RetentionPolicy,
        StorageType,
        StreamConfig,
    )

    await _stream(js, StreamConfig(name=config.task_stream, subjects=[config.task_subject],
                                   retention=RetentionPolicy.WORK_QUEUE,
                                   storage=StorageType.FILE, duplicate_window=120.0))
    await _stream(js, StreamConfig(name=config.dead_stream,
                                   subjects=[f"{config.prefix}.dead.>"],
                                   storage=StorageType.FILE, max_age=7 * 24 * 3600.0,
                                   duplicate_window=120.0))
    await _consumer(js, config, ConsumerConfig(
        durable_name=config.consumer, name=config.consumer, ack_policy=AckPolicy.EXPLICIT,
        ack_wait=config.ack_wait, max_deliver=config.max_deliver,
        filter_subject=config.task_subject, max_ack_pending=-1))
    try:
        return await js.key_value(config.results_bucket)
    except Exception:  # nats.js.errors.BucketNotFoundError, or a race with another creator
        return await js.create_key_value(KeyValueConfig(
            bucket=config.results_bucket, ttl=config.result_ttl, history=1))


async def _consumer(js: Any, config: QueueConfig, wanted: Any) -> None:
    from nats.js.errors import NotFoundError

    try:
        info = await js.consumer_info(config.task_stream, config.consumer)
        current = (info.config.ack_wait, info.config.max_deliver)
        if current == (config.ack_wait, config.max_deliver):
            return  # an update, even a no-op one, drops the workers' waiting pull requests
    except NotFoundError:
        pass
    await js.add_consumer(config.task_stream, wanted)


async def _stream(js: Any, stream: Any) -> None:
    from nats.js.errors import BadRequestError

    try:
        await js.add_stream(stream)
    except BadRequestError:  # exists with another config (e.g. an older version): align it
        await js.update_stream(stream)


async def read_dead_letters(js: Any, config: QueueConfig, last: int = 20) -> list[dict]:
    """The newest ``last`` dead letters of ``config``'s pool, oldest first: each the task,
    its error and how many deliveries it had."""
    import json

    from nats.js.errors import NotFoundError

    try:
        info = await js.stream_info(config.dead_stream)
    except NotFoundError:
        return []
    letters: list[dict] = []
    seq = info.state.last_seq
    while seq >= max(info.state.first_seq, 1) and len(letters) < last:
        try:
            raw = await js.get_msg(config.dead_stream, seq)
        except NotFoundError:
            raw = None
        if raw is not None and raw.subject == config.dead_subject:
            letters.append(json.loads(raw.data))
        seq -= 1
    return letters[::-1]
