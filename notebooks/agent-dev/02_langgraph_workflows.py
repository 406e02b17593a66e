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
# # 02 · LangGraph workflows
#
# A chain runs its steps once, in order. An agent needs more: branches that depend on
# what happened, loops that stop when the work is good enough, and a record of every step
# to debug it. LangGraph models that as a graph over a shared **state**: each **node** is
# a function that returns an update to the state, and **edges** (fixed or conditional)
# pick the next node. This notebook builds, on the bundled legal corpus:
#
# 1. a `TypedDict` state and three nodes wired `START -> retrieve -> answer -> cite -> END`;
# 2. conditional routing on a confidence score (answer, or hand over to a human);
# 3. a research agent: plan, gather, loop until there is enough, synthesise;
# 4. visualisation as Mermaid text, and the execution path from `stream`;
# 5. a draft/review loop with a maximum number of iterations;
# 6. debugging: the state after every step (a checkpointer's history, `stream_mode`), and
#    the time each node took;
# 7. agentcycle's own workflow agent, the production version: durable checkpoints and a
#    human approval step.
#
# **AI Lab image:** the agent-dev image (any Python 3.11+ kernel with
# `pip install "agentcycle[notebooks]"`).
# **Prerequisites:** none. On Thinkube the kernel has `LITELLM_ENDPOINT` and the model
# nodes use the platform's models; elsewhere agentcycle serves its bundled
# SmolLM2-135M-Instruct on 127.0.0.1. That model is weak, so its answers are poor; the
# graphs, the routing and the loops, which are the lesson, behave the same with any model.
# Retrieval uses the bundled all-MiniLM-L6-v2 embeddings, in memory.

# %% tags=["parameters"]
from agentcycle import lab

MAX_TOKENS = lab.sized(ci=24, full=160)  # per model call: the bundled model is slow on CPU
CONFIDENCE_THRESHOLD = 0.35  # cosine similarity below which the graph asks a human
MAX_GATHER_ROUNDS = lab.sized(ci=2, full=4)  # the research agent's loop bound
MAX_REVISIONS = lab.sized(ci=1, full=2)  # the draft/review loop's bound
WORKFLOW_REVISIONS = lab.sized(ci=0, full=1)  # agentcycle's workflow agent, section 7
QUESTION = "When must the landlord return the deposit, and what if it is returned late?"

# %% [markdown]
# ## Setup: services, the model, and a search over the legal corpus
#
# `lab.show_services` lists each service as the platform's or the embedded default.
# The search is the smallest honest retriever: agentcycle's own Markdown-aware splitter
# (`agentcycle.rag.split_documents`, every chunk keeps its section heading) and the
# bundled embedding model, with a dot product over the normalised vectors. The RAG
# notebook (04) does the same with Qdrant.

# %%
import contextlib
import operator
import os
import re
import time
from functools import wraps
from typing import Annotated, TypedDict

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the bundled models only, never a download
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph

from agentcycle import Settings
from agentcycle.agents.workflow import RuleReviewer
from agentcycle.examples import legal_corpus_dir
from agentcycle.models import Embedder, bundled_embedding_dir
from agentcycle.rag import load_documents, split_documents

pd.set_option("display.width", 80)
settings = Settings()
services = lab.show_services(settings)

stack = contextlib.ExitStack()  # closed in the last cell: stops the bundled model's server
chat = stack.enter_context(lab.chat_endpoint(settings))
llm = ChatOpenAI(**chat.langchain_kwargs(), temperature=0, max_tokens=MAX_TOKENS,
                 timeout=300, max_retries=1)

chunks = split_documents(load_documents(legal_corpus_dir()), chunk_size=500, overlap=80)
embedder = Embedder(bundled_embedding_dir())
chunk_vectors = embedder.embed([chunk.text for chunk in chunks])


def search(query: str, k: int = 2) -> list[dict]:
    """The ``k`` chunks closest to ``query``, with their cosine similarity."""
    scores = chunk_vectors @ embedder.embed([query])[0]
    best = np.argsort(-scores)[:k]
    return [{"heading": chunks[i].heading, "text": chunks[i].text.split("\n", 1)[-1],
             "score": round(float(scores[i]), 3)} for i in best]


print(f"{len(chunks)} chunks from {len({c.source for c in chunks})} files")
for hit in search("deposit returned late"):
    print(f"  {hit['score']:.3f}  {hit['heading']}")

# %% [markdown]
# Every node below is wrapped by `timed`, which records how long it ran (section 6 plots
# it). LangGraph does not need it: it is the cheapest way to see where the time goes.

# %%
node_times: list[dict] = []


def timed(graph_name: str):
    """Record each call's duration under (graph, node)."""

    def wrap(node):
        @wraps(node)
        def run(state):
            started = time.perf_counter()
            update = node(state)
            node_times.append({"graph": graph_name, "node": node.__name__,
                               "seconds": time.perf_counter() - started})
            return update

        return run

    return wrap


def ask(system: str, user: str) -> str:
    return llm.invoke([SystemMessage(system), HumanMessage(user)]).content.strip()


# %% [markdown]
# ## 1. State, three nodes, and edges from START to END
#
# The state is a `TypedDict`: the keys every node may read and update. A node receives
# the whole state and returns only the keys it changes; LangGraph merges the update.
# `add_edge` fixes the order; `compile()` checks the wiring (no node without a way in or
# out) and returns a Runnable, so `invoke` and `stream` work as on a chain.

# %%
class QAState(TypedDict, total=False):
    question: str
    hits: list[dict]
    confidence: float
    answer: str


@timed("qa")
def retrieve(state: QAState) -> QAState:
    hits = search(state["question"])
    return {"hits": hits, "confidence": hits[0]["score"]}


@timed("qa")
def answer(state: QAState) -> QAState:
    context = "\n".join(hit["text"] for hit in state["hits"])
    reply = ask("Answer from the context in one sentence.",
                f"Context: {context}\n\nQuestion: {state['question']}")
    return {"answer": reply}


@timed("qa")
def cite(state: QAState) -> QAState:
    return {"answer": f"{state['answer']} (see {state['hits'][0]['heading']})"}


builder = StateGraph(QAState)
builder.add_node("retrieve", retrieve)
builder.add_node("answer", answer)
builder.add_node("cite", cite)
builder.add_edge(START, "retrieve")
builder.add_edge("retrieve", "answer")
builder.add_edge("answer", "cite")
builder.add_edge("cite", END)
qa_graph = builder.compile()

result = qa_graph.invoke({"question": "How much can a landlord take as a deposit?"})
print(f"confidence {result['confidence']:.3f}")
print("answer:", result["answer"])

# %% [markdown]
# ## 2. Conditional routing on a confidence score
#
# `add_conditional_edges(node, router, mapping)` calls `router(state)` after the node and
# follows the edge it names. The confidence here is the retrieval score: the cosine
# similarity between the question and the best passage. Below the threshold the corpus
# probably does not cover the question, so the graph does not let the model improvise:
# it routes to a `handoff` node that asks a human (no model call). A model's own
# confidence (log-probabilities, a self-rating) is an alternative; the retrieval score is
# cheaper and harder to fool.

# %%
@timed("routed")
def handoff(state: QAState) -> QAState:
    return {"answer": f"Not in the Act as far as I can tell (confidence "
                      f"{state['confidence']:.2f}); passed to a human."}


def route_on_confidence(state: QAState) -> str:
    return "confident" if state["confidence"] >= CONFIDENCE_THRESHOLD else "unsure"


builder = StateGraph(QAState)
builder.add_node("retrieve", timed("routed")(retrieve.__wrapped__))
builder.add_node("answer", timed("routed")(answer.__wrapped__))
builder.add_node("cite", timed("routed")(cite.__wrapped__))
builder.add_node("handoff", handoff)
builder.add_edge(START, "retrieve")
builder.add_conditional_edges("retrieve", route_on_confidence,
                              {"confident": "answer", "unsure": "handoff"})
builder.add_edge("answer", "cite")
builder.add_edge("cite", END)
builder.add_edge("handoff", END)
routed_graph = builder.compile()

for question in ("Is the landlord allowed to enter without notice?",
                 "What is a good recipe for sourdough bread?"):
    path, seen = [], {}
    for update in routed_graph.stream({"question": question}, stream_mode="updates"):
        for node, change in update.items():
            path.append(node)
            seen.update(change)
    print(f"{question}\n  confidence {seen['confidence']:.2f}, "
          f"path: START -> {' -> '.join(path)} -> END\n  answer: {seen['answer']}")

# %% [markdown]
# `stream(..., stream_mode="updates")` yields one `{node: update}` per step: the
# execution path, with what each node changed. The off-topic question never reached the
# model.

# %% [markdown]
# ## 3. A research agent: plan, gather, loop until enough, synthesise
#
# * **plan** asks the model for search queries and always adds the question's own
#   clauses (a 135M model's plan is often unusable: the notebook shows which queries came
#   from where);
# * **gather** runs the next query and keeps new passages;
# * a conditional edge loops back to **gather** until there is enough: at least
#   `MIN_SOURCES` distinct passages that between them contain 80% of the question's key
#   terms; or until the queries or `MAX_GATHER_ROUNDS` run out;
# * **synthesise** answers from the passages, citing them.
#
# `sources` is declared `Annotated[list, operator.add]`: a *reducer*, so each gather
# round appends to the list instead of replacing it.

# %%
MIN_SOURCES = 3
STOPWORDS = {"a", "an", "and", "are", "as", "be", "by", "do", "does", "for", "from", "how", "if",
             "in", "is", "it", "its", "must", "of", "on", "or", "the", "this", "to", "what",
             "when", "where", "which", "who", "why", "will", "with"}


def key_terms(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", text.lower()) if w not in STOPWORDS}


class ResearchState(TypedDict, total=False):
    question: str
    plan_reply: str  # what the model wrote when asked for a plan
    queries: list[dict]  # {"query", "from"}: planned, not yet run
    sources: Annotated[list[dict], operator.add]
    rounds: int
    coverage: float
    answer: str


@timed("research")
def plan(state: ResearchState) -> ResearchState:
    reply = ask("List two short search queries, one per line, for the question. "
                "No other text.", state["question"])
    from_model = [line.strip(" -*0123456789.").strip() for line in reply.splitlines()]
    from_model = [q for q in from_model if 2 <= len(q.split()) <= 12][:2]
    clauses = [c.strip() for c in re.split(r",|\band\b|\?", state["question"]) if c.strip()]
    queries = ([{"query": q, "from": "model"} for q in from_model]
               + [{"query": c, "from": "question"} for c in clauses])
    return {"plan_reply": reply, "queries": queries, "rounds": 0, "sources": []}


@timed("research")
def gather(state: ResearchState) -> ResearchState:
    next_query, *rest = state["queries"]
    seen = {source["heading"] for source in state.get("sources", [])}
    new = [{**hit, "query": next_query["query"]} for hit in search(next_query["query"])
           if hit["heading"] not in seen]
    found = key_terms(" ".join(s["text"] for s in state.get("sources", []) + new))
    wanted = key_terms(state["question"])
    return {"queries": rest, "sources": new, "rounds": state["rounds"] + 1,
            "coverage": len(wanted & found) / len(wanted)}


def enough(state: ResearchState) -> str:
    covered = state["coverage"] >= 0.8 and len(state["sources"]) >= MIN_SOURCES
    done = covered or not state["queries"] or state["rounds"] >= MAX_GATHER_ROUNDS
    return "synthesise" if done else "gather"


@timed("research")
def synthesise(state: ResearchState) -> ResearchState:
    numbered = "\n".join(f"[{i}] {s['heading']}: {s['text'][:400]}"
                         for i, s in enumerate(state["sources"], 1))
    reply = ask("Answer the question from the sources in two sentences, citing them as "
                "[n].", f"Sources:\n{numbered}\n\nQuestion: {state['question']}")
    return {"answer": reply}


builder = StateGraph(ResearchState)
for node in (plan, gather, synthesise):
    builder.add_node(node.__name__, node)
builder.add_edge(START, "plan")
builder.add_edge("plan", "gather")
builder.add_conditional_edges("gather", enough, ["gather", "synthesise"])
builder.add_edge("synthesise", END)
research_graph = builder.compile()

# %% [markdown]
# ## 4. Visualisation and the execution path
#
# `graph.get_graph().draw_mermaid()` returns the graph as Mermaid text: JupyterLab and
# GitHub render it, and it needs no network (`draw_mermaid_png()` calls a web service,
# so it is not used here). Dotted edges are conditional.

# %%
mermaid = research_graph.get_graph().draw_mermaid()
print(mermaid)
display(Markdown(f"```mermaid\n{mermaid}\n```"))

# %% [markdown]
# Running the agent with `stream_mode="updates"` shows the path it took and what each
# step did; the final state is the merge of all the updates.

# %%
path, final = [], {"sources": []}
for update in research_graph.stream({"question": QUESTION}, stream_mode="updates"):
    for node, change in update.items():
        path.append(node)
        final = {**final, **change, "sources": final["sources"] + change.get("sources", [])}
        if node == "plan":
            print(f"plan     the model wrote: {change['plan_reply']!r}")
            for query in change["queries"]:
                print(f"plan     query from the {query['from']:8}: {query['query']}")
        elif node == "gather":
            print(f"gather   round {change['rounds']}: +{len(change['sources'])} passages, "
                  f"coverage {change['coverage']:.0%}")
print("path:", " -> ".join(["START", *path, "END"]))
print("sources:", [s["heading"] for s in final["sources"]])
print("answer:", final["answer"])

# %% [markdown]
# ## 5. A draft/review loop with a maximum number of iterations
#
# The reviewer here is agentcycle's `RuleReviewer`: deterministic checks (length, terms
# the answer must contain, a citation), cheap and predictable. An LLM reviewer
# (`agentcycle.agents.workflow.LLMReviewer`) judges style and substance, at the price of
# a model call per round. A loop on a model's output must have a bound: the small model
# may never satisfy the reviewer, and `MAX_REVISIONS` makes the loop end anyway, with the
# reviewer's notes kept for a human. (LangGraph also stops any run at its
# `recursion_limit`, 25 steps by default, with an error: the bound in the state is the
# graceful one.)

# %%
reviewer = RuleReviewer(min_chars=40, max_chars=600, required_terms=("21 days",),
                        require_citation=True)
context = search(QUESTION, k=2)
sources_text = "\n".join(f"[{i}] {hit['text'][:400]}" for i, hit in enumerate(context, 1))


class DraftState(TypedDict, total=False):
    task: str
    draft: str
    notes: list[str]
    approved: bool
    revisions: int


@timed("draft-review")
def draft(state: DraftState) -> DraftState:
    text = ask("Answer from the sources in two sentences, citing them as [n].",
               f"Sources:\n{sources_text}\n\nTask: {state['task']}")
    return {"draft": text, "revisions": 0}


@timed("draft-review")
def review(state: DraftState) -> DraftState:
    verdict = reviewer(state["task"], state["draft"], context)
    return {"approved": verdict.ok, "notes": verdict.notes}


@timed("draft-review")
def revise(state: DraftState) -> DraftState:
    problems = "\n".join(f"- {note}" for note in state["notes"])
    text = ask("Improve the answer. Write the improved answer only.",
               f"Sources:\n{sources_text}\n\nTask: {state['task']}\n\nAnswer: "
               f"{state['draft']}\n\nProblems:\n{problems}")
    return {"draft": text, "revisions": state["revisions"] + 1}


def after_review(state: DraftState) -> str:
    if state["approved"] or state["revisions"] >= MAX_REVISIONS:
        return "done"
    return "revise"


builder = StateGraph(DraftState)
for node in (draft, review, revise):
    builder.add_node(node.__name__, node)
builder.add_edge(START, "draft")
builder.add_edge("draft", "review")
builder.add_conditional_edges("review", after_review, {"revise": "revise", "done": END})
builder.add_edge("revise", "review")
# A checkpointer saves the state after every step, per thread: section 6 reads it back.
draft_graph = builder.compile(checkpointer=InMemorySaver())

thread = {"configurable": {"thread_id": "draft-1"}}
outcome = draft_graph.invoke({"task": QUESTION}, thread)
print(f"approved: {outcome['approved']} after {outcome['revisions']} revision(s) "
      f"(at most {MAX_REVISIONS})")
print("reviewer notes:", outcome["notes"] or "none")
print("final draft:", outcome["draft"])

# %% [markdown]
# ## 6. Debugging: the state after every step, and the time per node
#
# With a checkpointer, `get_state_history(config)` returns every checkpoint of the
# thread, newest first: which step it was, which node runs next, and the full state
# then. That is the first thing to read when a graph loops too often or stops early;
# `update_state` can even edit a checkpoint and resume from it.

# %%
history = list(draft_graph.get_state_history(thread))
rows = []
for snapshot in reversed(history):
    values = snapshot.values
    rows.append({"step": snapshot.metadata.get("step"),
                 "next": ",".join(snapshot.next) or "(end)",
                 "revisions": values.get("revisions", ""),
                 "approved": values.get("approved", ""),
                 "draft": (values.get("draft") or "")[:30]})
print(pd.DataFrame(rows).to_string(index=False))

# %% [markdown]
# Without a checkpointer, `stream_mode="values"` yields the whole state after each step
# and `stream_mode="debug"` adds each task's start and result with timestamps. Here on
# the routed graph with the off-topic question (no model call):

# %%
for number, state in enumerate(routed_graph.stream(
        {"question": "What is a good recipe for sourdough bread?"}, stream_mode="values")):
    print(f"values {number}: {sorted(state)}")
for event in routed_graph.stream({"question": "What is a good recipe for sourdough bread?"},
                                 stream_mode="debug"):
    print(f"debug  step {event['step']}: {event['type']:11} {event['payload'].get('name', '')}")

# %% [markdown]
# And the time per node, from the `timed` wrapper, for every graph this notebook ran.
# The nodes that call the model take seconds; retrieval takes milliseconds, routing and
# reviewing even less: the place to optimise is the model calls (fewer, shorter, or a
# faster model).

# %%
timings = pd.DataFrame(node_times)
per_node = (timings.groupby(["graph", "node"], sort=False)["seconds"]
            .agg(calls="count", total="sum", mean="mean").round(3))
print(per_node.to_string())

fig, axis = plt.subplots(figsize=(8, 4))
labels = [f"{graph}: {node}" for graph, node in per_node.index]
axis.barh(labels, per_node["total"], color="tab:blue")
axis.invert_yaxis()
axis.set_xlabel("seconds (all calls)")
axis.set_title("time per node")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 7. The production version: agentcycle's workflow agent
#
# `agentcycle.agents.workflow` is the same pattern hardened for production:
# research -> draft -> review -> revise (bounded) -> **approval** -> finalize, where
#
# * the checkpointer is durable (SQLite under the data dir, the platform's PostgreSQL
#   when `DATABASE_URL` is set) and every node's checkpoint is written before the next
#   node starts, so a killed process resumes where it stopped, from any process;
# * the approval node is a LangGraph `interrupt`: the run stops and waits for a human's
#   approve / edit / reject, which can come hours later through
#   `agentcycle workflow approve THREAD` or the app's API;
# * side effects (research, delivering the answer) run once per thread even across
#   crashes, and each step records its latency and tokens.
#
# It talks to models through agentcycle's router (here with one backend: this notebook's
# endpoint). Run once to the approval, then approved:

# %%
from agentcycle.agents.workflow import build_workflow_agent
from agentcycle.router import Backend, Router

# The bundled model costs nothing per token; a platform model is priced from LiteLLM's map.
prices = {"input_usd_per_1k": 0.0, "output_usd_per_1k": 0.0} if chat.source == "bundled" else {}
router = Router([Backend(name=chat.source, model=chat.litellm_model(), api_base=chat.base_url,
                         api_key=chat.api_key, transport="direct", timeout_s=300, **prices)],
                tracing=False)
stack.callback(router.close)
agent = build_workflow_agent(
    settings, router, researcher=lambda task: [{"source": "legal corpus", **hit}
                                               for hit in search(task)],
    required_terms=("21 days",), max_iterations=WORKFLOW_REVISIONS,
    max_tokens=MAX_TOKENS, tracing=False)
stack.callback(agent.close)

waiting = agent.run(QUESTION)
thread_id = waiting.metadata["thread_id"]
print(f"thread {thread_id}: {waiting.status}, next: {waiting.metadata['next']}")
print("draft for the human:", waiting.metadata["draft"])
print("reviewer notes:", waiting.metadata["notes"] or "none")
for step in waiting.steps:
    print(f"  {step.name:9} {step.latency_ms:8.1f} ms")

done = agent.approve(thread_id)
print(f"\nafter approval: {done.status}")
print("delivered:", agent.show(thread_id).outbox)
print("\n" + agent.graph.get_graph().draw_mermaid())

# %% [markdown]
# The same thread is visible to `agentcycle workflow list` and `agentcycle workflow show
# THREAD` from a shell, and `agentcycle agent run workflow "TASK"` or `agentcycle app
# --agent workflow` run it without a notebook. The `tkt-agentic-workflow` template
# (`agentcycle new tkt-agentic-workflow DEST`) starts a project from it.
#
# ## Clean up
#
# Closing the stack closes the workflow agent's store and the router, and stops the
# bundled model's server (nothing to stop on the platform).

# %%
stack.close()
print("closed")
