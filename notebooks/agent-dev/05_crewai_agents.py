# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (CrewAI)
#     language: python
#     name: agentcycle-crewai
# ---

# %% [markdown]
# # 05 · CrewAI agents: a research team on your own model
#
# CrewAI describes a team as *agents* (a role, a goal, a backstory, a model), *tasks*
# (a description, the output expected, the agent that does it) and a *crew* that runs the
# tasks in a *process*. This notebook builds every piece against an OpenAI-compatible
# endpoint and shows what really happens on each run:
#
# 1. CrewAI's `LLM` against LiteLLM (or the bundled model) by `base_url`;
# 2. a researcher, a writer and an editor, each with a role, goal and backstory;
# 3. three chained tasks (each one's output is the next one's context);
# 4. a sequential crew and its `kickoff()`;
# 5. a hierarchical process: a manager delegates to the team;
# 6. a custom tool (a search over the Marvale Residential Tenancy Act);
# 7. memory over runs: CrewAI's `Memory` with local embeddings, recalled by a later run;
# 8. a trace per crew run and a span per agent, with tokens, cost and latency
#    (OpenTelemetry: to Langfuse when `LANGFUSE_*` are set, else a local record);
# 9. a research team over data: questions on the Act, answered from its sections.
#
# **AI Lab image:** on the platform's agent-dev image CrewAI is installed in the main
# kernel: choose the *Python 3* kernel and every cell runs as it is. In this repository
# CrewAI lives in its own environment, because its pins (`openai<3`, `aiosqlite~=0.21`,
# `portalocker==2.7`) conflict with agentcycle's: `make crewai-venv` builds `.venv-crewai`
# and registers its Jupyter kernel, *Python 3 (CrewAI)* (`agentcycle-crewai`), which this
# notebook uses. That environment has CrewAI and agentcycle's light modules (settings,
# `lab`) but no torch: the bundled chat and embedding models run in agentcycle's own
# environment (`AGENTCYCLE_PYTHON`, set by the kernel), as separate processes.
#
# **Prerequisites:** none. With `LITELLM_ENDPOINT` (and `LITELLM_MASTER_KEY`) set, the
# crews talk to the platform's models. Otherwise they talk to the bundled
# SmolLM2-135M-Instruct: a 135-million-parameter model that often ignores CrewAI's
# instructions and rarely calls a tool. The notebook keeps `max_iter` small, catches
# failures and prints what happened; a platform model runs the same code with good
# answers.

# %% tags=["parameters"]
from agentcycle import lab

MAX_TOKENS = lab.sized(ci=24, full=200)  # per model call: the bundled model writes slowly
MAX_ITER = lab.sized(ci=1, full=3)  # CrewAI's reasoning steps per agent and task
TOPIC = "the tenant's security deposit"
RESEARCH_QUESTIONS = lab.sized(ci=1, full=3)  # questions for the research team (section 9)
PRICE_USD_PER_1K_TOKENS = 0.0  # the bundled model runs here: set your model's price

# %% [markdown]
# ## Setup: the services this notebook uses
#
# CrewAI sends anonymous telemetry and, when enabled, traces to its own cloud: both are
# turned off here (the notebook runs offline). `lab.show_services` lists each service:
# the platform's, or the embedded default used instead. This notebook uses the chat
# model, the embedding model (for memory) and, when set, Langfuse.

# %%
import contextlib
import importlib.util
import json
import logging
import math
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections import Counter

os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")  # no anonymous telemetry
os.environ.setdefault("CREWAI_TRACING_ENABLED", "false")  # no traces to CrewAI's cloud
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the bundled models only, never a download

import crewai
import httpx
from crewai import LLM, Agent, Crew, Process, Task
from rich.console import Console
from rich.table import Table

from agentcycle import Settings

# CrewAI warns on every call that the server gave no tokenizer for its own estimate;
# the servers here report real usage, which is what the traces below use.
logging.getLogger("crewai.llms.base_llm").setLevel(logging.ERROR)

settings = Settings()
settings.ensure_home()
console = Console(width=80)
print(f"CrewAI {crewai.__version__}, Python {sys.version.split()[0]} at {sys.executable}")
services = lab.show_services(settings)

# %% [markdown]
# ## 1. CrewAI against LiteLLM
#
# CrewAI's `LLM` takes a model name with its provider prefix: `openai/<model>` and a
# `base_url` make it an OpenAI-compatible client, which is what LiteLLM's proxy is (the
# platform's `LITELLM_ENDPOINT`). `lab.chat_endpoint` picks that endpoint when it is set.
#
# Without it, the bundled model is served on 127.0.0.1. `lab.chat_endpoint` would start
# it in this process, but this kernel's environment has no torch, so the cell below asks
# agentcycle's own environment to serve it (`agentcycle serve`, the same server) and
# describes it with the same `lab.ChatEndpoint`. On the platform's image, one environment
# holds both, and `lab.chat_endpoint(settings)` alone does it.

# %%
AGENTCYCLE_PYTHON = os.environ.get("AGENTCYCLE_PYTHON") or sys.executable


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def bundled_model_served_by(python: str, timeout_s: float = 600.0):
    """`agentcycle serve` (the bundled model) run by agentcycle's environment, until exit."""
    port, key = _free_port(), "lab-" + os.urandom(6).hex()
    log_path = settings.home / "crewai-notebook-serve.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [python, "-m", "agentcycle", "serve", "--port", str(port), "--api-key", key,
             "--model-name", "local"], stdout=log, stderr=subprocess.STDOUT)
        base_url = f"http://127.0.0.1:{port}/v1"
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                if server.poll() is not None:
                    raise RuntimeError(f"agentcycle serve exited ({server.returncode}): "
                                       f"{log_path.read_text()[-500:]}")
                with contextlib.suppress(httpx.HTTPError):
                    reply = httpx.get(base_url + "/models", timeout=2,
                                      headers={"Authorization": f"Bearer {key}"})
                    if reply.status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the model server did not start in {timeout_s:.0f} s")
                time.sleep(1)
            print(f"chat model: the bundled model served at {base_url} by {python} "
                  "(set LITELLM_ENDPOINT to use the platform's LiteLLM)")
            yield lab.ChatEndpoint(base_url, key, "local", "bundled")
        finally:
            server.terminate()  # agentcycle serve stops its engine with it
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()


stack = contextlib.ExitStack()  # closed in the last cell
one_environment = importlib.util.find_spec("transformers") is not None
if settings.litellm_endpoint or settings.server_url or one_environment:
    chat = stack.enter_context(lab.chat_endpoint(settings))
else:
    chat = stack.enter_context(bundled_model_served_by(AGENTCYCLE_PYTHON))

llm = LLM(model=chat.litellm_model(), base_url=chat.base_url, api_key=chat.api_key,
          max_tokens=MAX_TOKENS, temperature=0)
started = time.perf_counter()
hello = llm.call("Say hello to a tenant in five words.")
print(f"{chat.litellm_model()} answered in {time.perf_counter() - started:.1f} s: {hello!r}")

# %% [markdown]
# ### Recording what each crew run does
#
# CrewAI announces everything on its event bus: an agent starts or finishes a task, a
# model call completes (with its token usage), a tool runs. `traced_kickoff` below
# listens while a crew runs and keeps a record per run: its time span, each agent's
# start and end, its model calls and tokens. A failed run is caught and recorded with
# its error, so one bad answer from a small model never stops the notebook. Section 8
# turns these records into OpenTelemetry traces.
#
# A notebook already runs an event loop, and CrewAI 1.x refuses a blocking `kickoff()`
# inside one: here crews run with `await crew.kickoff_async(...)`, the same run without
# blocking the loop. In a script, `crew.kickoff(...)` does it.

# %%
from crewai.events import (
    AgentExecutionCompletedEvent,
    AgentExecutionStartedEvent,
    LLMCallCompletedEvent,
    LLMCallFailedEvent,
    ToolUsageFinishedEvent,
    crewai_event_bus,
)

_events: list[tuple[str, str, float, dict]] = []  # (kind, agent role, unix time, detail)
_events_lock = threading.Lock()


def _note(kind: str, role: str | None, timestamp, detail: dict | None = None) -> None:
    with _events_lock:
        _events.append((kind, role or "?", timestamp.timestamp(), detail or {}))


@crewai_event_bus.on(AgentExecutionStartedEvent)
def _agent_started(source, event):
    _note("start", event.agent.role, event.timestamp)


@crewai_event_bus.on(AgentExecutionCompletedEvent)
def _agent_completed(source, event):
    _note("end", event.agent.role, event.timestamp)


@crewai_event_bus.on(LLMCallCompletedEvent)
def _llm_completed(source, event):
    _note("llm", event.agent_role, event.timestamp, dict(event.usage or {}))


@crewai_event_bus.on(LLMCallFailedEvent)
def _llm_failed(source, event):
    _note("llm_error", event.agent_role, event.timestamp, {"error": str(event.error)[:200]})


@crewai_event_bus.on(ToolUsageFinishedEvent)
def _tool_used(source, event):
    _note("tool", event.agent_role, event.timestamp, {"tool": event.tool_name})


RUNS: list[dict] = []  # one record per crew run, for section 8


async def traced_kickoff(crew: Crew, name: str, inputs: dict | None = None):
    """Run the crew, record what happened (events, timing, usage); never raises."""
    inputs = {"topic": TOPIC} if inputs is None else inputs  # the agents' goals name it
    with _events_lock:
        _events.clear()
    started, error, output = time.time(), None, None
    try:
        output = await crew.kickoff_async(inputs=inputs)
    except Exception as exc:  # a small model's unusable answer, a refused call ...
        error = f"{type(exc).__name__}: {exc}"[:300]
    crewai_event_bus.flush()  # handlers run on CrewAI's threads: wait for them
    ended = time.time()
    with _events_lock:
        events = list(_events)
    # Totals from the model calls seen: crew.usage_metrics adds up each agent's LLM
    # object, and agents sharing one LLM would count its calls once per agent.
    calls = [d for kind, _, _, d in events if kind == "llm"]
    usage = {"calls": len(calls),
             "prompt_tokens": sum(int(d.get("prompt_tokens") or 0) for d in calls),
             "completion_tokens": sum(int(d.get("completion_tokens") or 0) for d in calls)}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    RUNS.append({"name": name, "process": str(crew.process.value), "start": started,
                 "end": ended, "error": error, "events": events, "usage": usage,
                 "answer": str(output.raw) if output is not None else ""})
    status = f"failed: {error}" if error else "completed"
    print(f"{name}: {status} in {ended - started:.1f} s, "
          f"{usage['calls']} model calls, {usage['total_tokens']} tokens")
    return output


# %% [markdown]
# ## 2. Researcher, writer and editor
#
# An agent is a role, a goal and a backstory: CrewAI turns them into the system prompt
# of every call the agent makes. `allow_delegation=False` keeps each one to its own task;
# `max_iter` bounds its reasoning steps (a small model that never writes a final answer
# stops there, and CrewAI asks it once for its best answer).

# %%
def make_agent(role: str, goal: str, backstory: str, **options) -> Agent:
    return Agent(role=role, goal=goal, backstory=backstory, llm=llm,
                 allow_delegation=options.pop("allow_delegation", False),
                 max_iter=MAX_ITER, verbose=False, **options)


researcher = make_agent(
    "Tenancy law researcher",
    "Find the exact rules of the Marvale Residential Tenancy Act about {topic}",
    "You read statutes line by line and quote section numbers.")
writer = make_agent(
    "Plain-language writer",
    "Explain the rules about {topic} to a tenant in plain words",
    "You write short notes for tenants who have no lawyer.")
editor = make_agent(
    "Editor",
    "Make the note about {topic} correct, short and friendly",
    "You cut every word that does not help the reader and keep every number.")
for agent in (researcher, writer, editor):
    print(f"{agent.role:26} goal: {agent.goal}")

# %% [markdown]
# ## 3. Three chained tasks
#
# Each task names its agent and the output it expects. `context=[...]` passes the
# earlier tasks' outputs into a task's prompt: research -> draft -> edit. `{topic}` is
# filled in from `kickoff(inputs=...)`.

# %%
research_task = Task(
    description="List the two most important rules about {topic} in the Marvale Act.",
    expected_output="Two bullet points, each with its section number.",
    agent=researcher)
draft_task = Task(
    description="Write a note of two sentences for a tenant about {topic}, from the research.",
    expected_output="Two plain sentences.",
    agent=writer, context=[research_task])
edit_task = Task(
    description="Edit the note about {topic}: keep it correct and under 50 words.",
    expected_output="The final note, under 50 words.",
    agent=editor, context=[draft_task])

# %% [markdown]
# ## 4. A sequential crew
#
# `Process.sequential` runs the tasks in order. `kickoff()` (here `kickoff_async()`)
# returns a `CrewOutput`: the last task's answer (`.raw`) and every task's output
# (`.tasks_output`); `crew.usage_metrics` has the tokens (per agent's LLM object: our
# agents share one, so `traced_kickoff` counts the calls it saw instead).

# %%
sequential_crew = Crew(agents=[researcher, writer, editor],
                       tasks=[research_task, draft_task, edit_task],
                       process=Process.sequential, verbose=False)
result = await traced_kickoff(sequential_crew, "sequential: research, draft, edit",
                        {"topic": TOPIC})  # fills {topic} in goals and tasks
if result is not None:
    for task_output in result.tasks_output:
        print(f"\n[{task_output.agent}]\n{task_output.raw.strip()[:400]}")

# %% [markdown]
# With the bundled 135M model the three answers are often off topic or repeat the
# prompt: the chain runs, the content is weak. The mechanics are what this section shows:
# three agents, each given the previous one's output.

# %% [markdown]
# ## 5. A hierarchical process with a manager
#
# `Process.hierarchical` gives the tasks to a manager agent (here our own, or one CrewAI
# builds from `manager_llm=`). The manager gets CrewAI's delegation tools ("Delegate work
# to coworker", "Ask question to coworker") and decides who does what; the team's agents
# must not be given the task themselves. The events show who actually worked: a small
# model often answers as the manager without delegating, or fails to call the tool.

# %%
manager = make_agent(
    "Research manager",
    "Get a correct, short answer about {topic} from your team",
    "You split work between a researcher and a writer and check their results.",
    allow_delegation=True)
hierarchical_crew = Crew(
    agents=[researcher, writer],
    tasks=[Task(description="Answer a tenant: what must a landlord do about {topic}?",
                expected_output="Two sentences with the section number.")],
    process=Process.hierarchical, manager_agent=manager, verbose=False)
await traced_kickoff(hierarchical_crew, "hierarchical: a manager and two agents")
worked = [(kind, role) for kind, role, _, _ in RUNS[-1]["events"] if kind in ("start", "tool")]
print("who worked, in order:", worked or "nobody (the run failed before any agent started)")

# %% [markdown]
# ## 6. A custom tool: search the Act
#
# A CrewAI tool is a `BaseTool` with a name, a description (what the model reads to
# decide when to call it) and an argument schema. This one searches the Marvale
# Residential Tenancy Act (agentcycle's bundled legal corpus) by keyword and returns the
# best sections with their numbers. It runs on its own first, then as an agent's tool.

# %%
from crewai.tools import BaseTool
from pydantic import BaseModel, Field

from agentcycle.examples.legal import legal_corpus_dir

SECTION = re.compile(r"^## (§ \d+\.[^\n]*)\n(.*?)(?=^## |\Z)", re.M | re.S)
ACT_SECTIONS = {title.strip(): body.strip()
                for path in sorted(legal_corpus_dir().glob("*.md"))
                for title, body in SECTION.findall(path.read_text())}
print(f"{len(ACT_SECTIONS)} sections of the Act")


def _terms(text: str) -> Counter:
    """Words of 4+ letters cut to 6, so "returned" matches "return"."""
    return Counter(w[:6] for w in re.findall(r"[a-z]+", text.lower()) if len(w) > 3)


# Term counts per section, and idf: a word found in few sections ("deposit") says more
# than one found in most ("landlord").
_TERMS = {title: _terms(title + " " + body) for title, body in ACT_SECTIONS.items()}
_IDF = {w: math.log(len(ACT_SECTIONS) / sum(w in terms for terms in _TERMS.values()))
        for w in set().union(*_TERMS.values())}


def best_sections(query: str, k: int = 2) -> list[str]:
    wanted = _terms(query)
    return sorted(ACT_SECTIONS, key=lambda title: -sum(
        _IDF.get(w, 0.0) * math.log1p(_TERMS[title][w]) for w in wanted))[:k]


class StatuteQuery(BaseModel):
    query: str = Field(..., description="What to look for, in a few words")


class StatuteSearch(BaseTool):
    name: str = "statute_search"
    description: str = ("Search the Marvale Residential Tenancy Act; returns the two "
                        "sections that best match the query, with their numbers.")
    args_schema: type[BaseModel] = StatuteQuery

    def _run(self, query: str) -> str:
        return "\n\n".join(f"{title}\n{ACT_SECTIONS[title][:600]}"
                           for title in best_sections(query))


statute_search = StatuteSearch()
print(statute_search.run(query="deposit returned days")[:500])

# %%
tool_user = make_agent(
    "Tenancy law researcher",
    "Answer questions on the Marvale Act from its text, citing sections",
    "You always look the rule up with statute_search before answering.",
    tools=[statute_search])
await traced_kickoff(Crew(agents=[tool_user], tasks=[Task(
    description="How many days does a landlord have to return a deposit? Use statute_search.",
    expected_output="One sentence with the number of days and the section.",
    agent=tool_user)]), "custom tool: statute_search")
tools_called = [d.get("tool") for kind, _, _, d in RUNS[-1]["events"] if kind == "tool"]
print("tool calls:", tools_called or "none: the model answered without the tool")
print("answer:", RUNS[-1]["answer"][:300])

# %% [markdown]
# A model that follows instructions calls `statute_search` and quotes the section; the
# 135M model usually answers from its own (wrong) idea. Section 9 does not leave the
# search to the model: the team retrieves first and reasons over what it found.

# %% [markdown]
# ## 7. Memory over runs
#
# CrewAI's `Memory` keeps what a crew learned between runs: records with a scope,
# categories and an importance, embedded and stored in LanceDB (here under agentcycle's
# data dir), recalled by meaning. It needs an embedding model: here the bundled
# all-MiniLM-L6-v2, computed by agentcycle's environment in one helper process (this
# kernel has no torch); on the platform's image `agentcycle.models.Embedder` runs in the
# kernel, or CrewAI's `{"provider": "openai", ...}` embedder can use LiteLLM's embedding
# model. Given its scope, categories and importance, `remember()` stores a record without
# asking the model to analyse it (CrewAI's analysis wants a JSON answer a 135M model
# cannot give); `recall(depth="shallow")` is a vector search, no model call.
#
# Run 1 answers a question and remembers the answer with the section it came from. Run
# 2 (a new `Memory` object on the same store, as a new session would open it) recalls
# what run 1 found and gives it to its task as context: short-term memory passed the way
# CrewAI passes task context, long-term memory kept on disk.

# %%
from crewai.memory import Memory

EMBED_WORKER = """
import json, sys
from agentcycle import Settings
from agentcycle.models import Embedder, embedding_model_dir
embedder = Embedder(embedding_model_dir(Settings()))
print(json.dumps({"dimension": embedder.dimension}), flush=True)
for line in sys.stdin:
    print(json.dumps(embedder.embed(json.loads(line)).tolist()), flush=True)
"""


class LocalEmbedder:
    """The bundled MiniLM as CrewAI's embedder: texts in, one vector per text out."""

    def __init__(self, python: str):
        if importlib.util.find_spec("sentence_transformers"):  # one environment
            from agentcycle.models import Embedder, embedding_model_dir

            self._embedder, self._process = Embedder(embedding_model_dir(settings)), None
            self.dimension = self._embedder.dimension
            return
        # torch's start-up noise goes to a log; open as long as the helper runs
        self._log = open(settings.home / "crewai-notebook-embed.log", "w")  # noqa: SIM115
        self._process = subprocess.Popen([python, "-c", EMBED_WORKER], text=True,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=self._log)
        self._lock = threading.Lock()  # CrewAI saves from its own thread
        self.dimension = json.loads(self._process.stdout.readline())["dimension"]

    def __call__(self, texts: list[str]) -> list[list[float]]:
        if self._process is None:
            return self._embedder.embed(list(texts)).tolist()
        with self._lock:
            self._process.stdin.write(json.dumps(list(texts)) + "\n")
            self._process.stdin.flush()
            return json.loads(self._process.stdout.readline())

    def close(self) -> None:
        if self._process is not None:
            self._process.stdin.close()
            self._process.wait(timeout=30)
            self._log.close()


embedder = LocalEmbedder(AGENTCYCLE_PYTHON)
stack.callback(embedder.close)
MEMORY_DIR = settings.home / "crewai-memory"
print(f"embeddings: {embedder.dimension} dimensions; memory stored in {MEMORY_DIR}")

# %%
QUESTION = "How long does a landlord have to return a security deposit?"


async def memory_run(run: int, memory: Memory) -> str:
    """One crew run on QUESTION, with what memory recalls as its context."""
    recalled = memory.recall(QUESTION, depth="shallow", limit=2)
    notes = "\n".join(f"- {m.record.content}" for m in recalled) or "- (nothing yet)"
    print(f"run {run} recalls {len(recalled)} record(s):")
    for match in recalled:
        print(f"  {match.score:.2f}  {match.record.content[:100]}")
    section = statute_search.run(query=QUESTION).split("\n")[0]
    task = Task(description=f"{QUESTION}\nWhat earlier runs found:\n{notes}",
                expected_output="One sentence with the number of days.", agent=researcher)
    output = await traced_kickoff(Crew(agents=[researcher], tasks=[task]), f"memory: run {run}")
    answer = output.raw.strip() if output is not None else ""
    memory.remember(f"{QUESTION} The Act's {section} applies. Run {run} answered: "
                    f"{answer[:200]}", scope="/tenancy/deposits", categories=["findings"],
                    importance=0.7, source=f"run-{run}")
    return answer


def open_memory() -> Memory:
    # consolidation_threshold=1.0: CrewAI would ask the model to merge records that are
    # alike (a JSON answer); with a 135M model that fails, so similar records are kept.
    return Memory(llm=llm, storage=str(MEMORY_DIR), embedder=embedder,
                  consolidation_threshold=1.0)


first = open_memory()
first.reset()  # a clean store for this lesson (a real team keeps it between sessions)
await memory_run(1, first)
first.drain_writes()
second = open_memory()  # a later session opens the same store
second_answer = await memory_run(2, second)

# %% [markdown]
# Run 2's prompt holds run 1's finding and the section it cited: what one run learns,
# the next one starts from. `Crew(memory=Memory(...))` does this automatically (each
# agent recalls before a task, and the crew saves what it learned after), with the model
# analysing and consolidating the records: worth turning on with a model that answers
# CrewAI's JSON prompts, which the bundled 135M model does not.

# %% [markdown]
# ## 8. A trace per crew run, a span per agent
#
# Each record from `traced_kickoff` becomes an OpenTelemetry trace: a root span for the
# crew run, a child span per agent (from its first start to its last end) with its model
# calls, tokens, latency and cost, using the GenAI semantic-convention attributes
# (`gen_ai.usage.input_tokens` ...). With `LANGFUSE_HOST`, `LANGFUSE_PUBLIC_KEY` and
# `LANGFUSE_SECRET_KEY` set, the spans go to Langfuse's OTLP endpoint
# (`agentcycle.observe.tracing.langfuse_otlp_env` gives the endpoint and credentials,
# the same ones agentcycle's own traces use); without them they go to a local record (an
# in-memory exporter), shown below. Cost is tokens times `PRICE_USD_PER_1K_TOKENS` plus
# the machine's time at `AGENTCYCLE_ENERGY_USD_PER_HOUR` (both 0 by default: the bundled
# model runs here).

# %%
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode, set_span_in_context

from agentcycle.observe import local_cost
from agentcycle.observe.tracing import langfuse_otlp_env

provider = TracerProvider(resource=Resource.create({"service.name": "crewai-notebook"}))
local_record = InMemorySpanExporter()
provider.add_span_processor(SimpleSpanProcessor(local_record))
otlp = langfuse_otlp_env(settings)
if otlp:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    header, value = otlp["OTEL_EXPORTER_OTLP_TRACES_HEADERS"].split("=", 1)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(
        endpoint=otlp["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"], headers={header: value})))
    print(f"traces: Langfuse at {settings.langfuse_host} (and the local record below)")
else:
    print("traces: a local record (in memory); set LANGFUSE_* to send them to Langfuse")
tracer = provider.get_tracer("agentcycle.notebooks.crewai")


def _ns(unix_s: float) -> int:
    return int(unix_s * 1e9)


def cost_usd(tokens: int, seconds: float) -> float:
    return (tokens / 1000 * PRICE_USD_PER_1K_TOKENS
            + local_cost(seconds, settings.energy_usd_per_hour))


def export_run(run: dict) -> list[dict]:
    """One trace for a crew run; returns a row per agent (for the table)."""
    root = tracer.start_span(f"crew run: {run['name']}", start_time=_ns(run["start"]),
                             attributes={"crewai.process": run["process"],
                                         "gen_ai.request.model": chat.model,
                                         "gen_ai.usage.input_tokens":
                                             run["usage"]["prompt_tokens"],
                                         "gen_ai.usage.output_tokens":
                                             run["usage"]["completion_tokens"]})
    rows = []
    for role in dict.fromkeys(r for _, r, _, _ in run["events"]):  # in order of appearance
        mine = [(kind, t, d) for kind, r, t, d in run["events"] if r == role]
        starts = [t for kind, t, _ in mine if kind == "start"] or [mine[0][1]]
        ends = [t for kind, t, _ in mine if kind == "end"] or [mine[-1][1]]
        calls = [d for kind, _, d in mine if kind == "llm"]
        prompt = sum(int(d.get("prompt_tokens") or 0) for d in calls)
        completion = sum(int(d.get("completion_tokens") or 0) for d in calls)
        seconds = max(ends) - min(starts)
        span = tracer.start_span(
            f"agent: {role}", context=set_span_in_context(root),
            start_time=_ns(min(starts)),
            attributes={"gen_ai.agent.name": role, "gen_ai.request.model": chat.model,
                        "gen_ai.usage.input_tokens": prompt,
                        "gen_ai.usage.output_tokens": completion,
                        "agentcycle.llm_calls": len(calls),
                        "agentcycle.cost_usd": cost_usd(prompt + completion, seconds)})
        span.end(end_time=_ns(max(ends)))
        rows.append({"run": run["name"], "agent": role, "calls": len(calls),
                     "tokens": prompt + completion, "seconds": seconds,
                     "cost": cost_usd(prompt + completion, seconds)})
    if run["error"]:
        root.set_status(Status(StatusCode.ERROR, run["error"]))
    root.end(end_time=_ns(run["end"]))
    return rows


agent_rows = [row for run in RUNS for row in export_run(run)]
provider.force_flush()
spans = local_record.get_finished_spans()
print(f"{len(RUNS)} crew runs -> {len(spans)} spans in "
      f"{len({s.context.trace_id for s in spans})} traces")

table = Table(title="span per agent: calls, tokens, latency, cost", width=80)
for column in ("crew run", "agent", "calls", "tokens", "seconds", "cost USD"):
    table.add_column(column, overflow="fold")
for row in agent_rows:
    table.add_row(row["run"], row["agent"], str(row["calls"]), str(row["tokens"]),
                  f"{row['seconds']:.1f}", f"{row['cost']:.6f}")
console.print(table)

# %%
runs = Table(title="trace per crew run", width=80)
for column in ("crew run", "status", "seconds", "model calls", "tokens"):
    runs.add_column(column, overflow="fold")
for run in RUNS:
    runs.add_row(run["name"], "error" if run["error"] else "ok",
                 f"{run['end'] - run['start']:.1f}",
                 str(run["usage"]["calls"]), str(run["usage"]["total_tokens"]))
console.print(runs)
first_trace = spans[0].context.trace_id
print("one trace, as exported:")
for span in (s for s in spans if s.context.trace_id == first_trace):
    print(f"  {span.name:45} parent={'-' if span.parent is None else 'root'} "
          f"{(span.end_time - span.start_time) / 1e9:6.1f} s "
          f"tokens={span.attributes.get('gen_ai.usage.output_tokens', 0)} out")

# %% [markdown]
# ## 9. A research team over data
#
# The team answers questions on the Act. Retrieval is a step the crew's code takes with
# the same `statute_search` tool (a small model cannot be trusted to call it); the
# researcher extracts the rule from the sections found, the writer answers the tenant,
# and the answer is checked against the known answer of agentcycle's legal test set.

# %%
from agentcycle.examples.legal import legal_split

cases = [json.loads(line) for line in legal_split("test").read_text().splitlines()
         if line.strip()]
cases = [c for c in cases if "deposit" in c["question"].lower()][:RESEARCH_QUESTIONS]
print(f"{len(cases)} question(s), e.g. {cases[0]['question']!r} "
      f"(§ {cases[0]['section']}, key facts {cases[0]['keywords']})")

# %%
team_rows = []
for case in cases:
    sections = statute_search.run(query=case["question"])
    find = Task(description=f"Question: {case['question']}\nSections of the Act:\n"
                            f"{sections}\nQuote the rule that answers the question.",
                expected_output="The rule, with its section number.", agent=researcher)
    answer = Task(description=f"Answer the tenant's question: {case['question']}",
                  expected_output="One or two sentences.", agent=writer, context=[find])
    output = await traced_kickoff(Crew(agents=[researcher, writer], tasks=[find, answer]),
                            f"research team: {case['id']}")
    said = output.raw.strip() if output is not None else ""
    found = [int(n) for n in re.findall(r"§ (\d+)\.", sections)]
    team_rows.append({"question": case["question"], "found": found,
                      "retrieved": case["section"] in found, "answer": said,
                      "key facts": all(k.lower() in said.lower() for k in case["keywords"])})
team = Table(title="research team: the test set's questions", width=80)
for column in ("question", "sections found", "right section", "answer", "key facts"):
    team.add_column(column, overflow="fold")
for row in team_rows:
    team.add_row(row["question"][:80], ", ".join(f"§ {n}" for n in row["found"]),
                 str(row["retrieved"]), row["answer"][:160], str(row["key facts"]))
console.print(team)

# %% [markdown]
# The retrieval finds the right sections; whether the answer keeps the right number is
# the model's part. With the bundled 135M model it often does not: that is the gap
# fine-tuning (the fine-tuning notebooks, `agentcycle demo`) and a bigger platform model
# close. The crew code does not change.
#
# ## Clean up
#
# Stop the model server and the embedding helper (started by this notebook), and the
# tracer. The memory store stays under agentcycle's data dir for the next session.

# %%
provider.shutdown()
stack.close()
print("stopped: the chat endpoint and the embedding helper")
