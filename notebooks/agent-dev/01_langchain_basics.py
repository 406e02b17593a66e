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
# # 01 · LangChain basics
#
# LangChain's core idea is small: a prompt, a model and a parser are each a *Runnable*,
# and `|` joins Runnables into a chain (LCEL, the LangChain Expression Language). This
# notebook builds every basic piece against a real OpenAI-compatible endpoint:
#
# 1. connect `ChatOpenAI` to the platform's LiteLLM (`LITELLM_ENDPOINT`, or the image's
#    `LITELLM_URL`), or to the bundled model served here;
# 2. a prompt-template chain: `prompt | llm | StrOutputParser()`;
# 3. system + human message templates;
# 4. structured output with a Pydantic parser and its format instructions, what a parse
#    failure looks like, and how to recover (retry with the error, a rule-based
#    fallback, `with_structured_output`);
# 5. composing two chains: topic -> outline -> text;
# 6. summarising a document, map-reduce over chunks;
# 7. time and tokens of every call, from each response's metadata.
#
# LangChain 1.x moved `LLMChain`, `SimpleSequentialChain` and `RetrievalQA` to
# `langchain-classic`; everything here is LCEL on `langchain-core`, which is what new code
# should use.
#
# **AI Lab image:** the agent-dev image (any Python 3.11+ kernel with
# `pip install "agentcycle[notebooks]"`).
# **Prerequisites:** none. On Thinkube the kernel has `LITELLM_ENDPOINT` and
# `LITELLM_MASTER_KEY`, and the chains talk to the platform's models. Elsewhere agentcycle
# serves its bundled SmolLM2-135M-Instruct on 127.0.0.1: a 135-million-parameter model,
# small enough for a laptop CPU and weak at following instructions. The notebook shows the
# mechanics honestly with it (including the failures); a platform model makes the same
# chains give good answers without a code change.

# %% tags=["parameters"]
from agentcycle import lab

MAX_TOKENS = lab.sized(ci=24, full=160)  # per call: the bundled model writes ~5-30 tokens/s
STRUCTURED_MAX_TOKENS = lab.sized(ci=48, full=160)  # a JSON object needs a few more
SUMMARY_FILE = "part2_deposits.md"  # from agentcycle's bundled legal corpus
CHUNK_SIZE = lab.sized(ci=700, full=900)  # characters per chunk for the map step
SUMMARY_CHUNKS = lab.sized(ci=2, full=None)  # chunks to summarise (None: every chunk)
TOPIC = "returning a tenant's security deposit"

# %% [markdown]
# ## Setup: the services this notebook uses
#
# `lab.show_services` lists each service: the platform's (its variable is set) or the
# embedded default agentcycle uses instead, with the variable that would switch it. This
# notebook needs only the chat model.

# %%
import contextlib
import os
import re
import time
from operator import itemgetter
from uuid import UUID

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the bundled models only, never a download
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import matplotlib.pyplot as plt
import pandas as pd
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.exceptions import OutputParserException
from langchain_core.output_parsers import PydanticOutputParser, StrOutputParser
from langchain_core.outputs import LLMResult
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder, PromptTemplate
from langchain_core.runnables import RunnableLambda, RunnablePassthrough
from langchain_openai import ChatOpenAI
from langchain_text_splitters import RecursiveCharacterTextSplitter
from pydantic import BaseModel, Field

from agentcycle import Settings
from agentcycle.examples import legal_corpus_dir

pd.set_option("display.width", 80)
pd.set_option("display.max_colwidth", 40)
settings = Settings()
services = lab.show_services(settings)

# %% [markdown]
# ## 1. Connect to LiteLLM with `ChatOpenAI`
#
# LiteLLM is an OpenAI-compatible gateway, so LangChain reaches it with `ChatOpenAI` and
# a `base_url`: no LiteLLM-specific client. agentcycle's settings read the gateway's
# address from `LITELLM_ENDPOINT` (the platform's variable) or, failing that, from
# `LITELLM_URL` / `LITELLM_API_BASE` (the AI Lab image's defaults), and the key from
# `LITELLM_MASTER_KEY`. `lab.chat_endpoint` picks the first model the gateway lists, or
# serves the bundled model here when no gateway is set, and hands back the three
# arguments `ChatOpenAI` needs.
#
# Every call below goes through one small callback handler, `CallMeter`, that records
# the call's latency and the token usage the endpoint reports (section 7 tabulates it).

# %%
for variable in ("LITELLM_ENDPOINT", "LITELLM_URL", "LITELLM_API_BASE", "LITELLM_MASTER_KEY"):
    print(f"{variable:20} {'set' if os.environ.get(variable) else 'not set'}")

stack = contextlib.ExitStack()  # closed in the last cell: stops the bundled model's server
chat = stack.enter_context(lab.chat_endpoint(settings))
print(f"source: {chat.source}, model: {chat.model}, base_url: {chat.base_url}")


class CallMeter(BaseCallbackHandler):
    """Latency and token usage of every chat-model call, labelled by lesson section."""

    def __init__(self) -> None:
        self.section = "setup"
        self.rows: list[dict] = []
        self._started: dict[UUID, float] = {}

    def on_chat_model_start(self, serialized, messages, *, run_id: UUID, **kwargs) -> None:
        self._started[run_id] = time.perf_counter()

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs) -> None:
        seconds = time.perf_counter() - self._started.pop(run_id, time.perf_counter())
        message = response.generations[0][0].message
        usage = message.usage_metadata or {}
        self.rows.append({
            "section": self.section, "seconds": round(seconds, 2),
            "prompt_tok": usage.get("input_tokens", 0),
            "output_tok": usage.get("output_tokens", 0),
            "finish": message.response_metadata.get("finish_reason", "")})


meter = CallMeter()
llm = ChatOpenAI(**chat.langchain_kwargs(), temperature=0, max_tokens=MAX_TOKENS,
                 timeout=300, max_retries=1, callbacks=[meter])

meter.section = "1 connect"
reply = llm.invoke("In one short sentence: what is a security deposit?")
print("reply:", reply.content)
print("usage:", reply.usage_metadata)
print("finish reason:", reply.response_metadata.get("finish_reason"))

# %% [markdown]
# `reply` is an `AIMessage`: `content` is the text, `usage_metadata` the token counts the
# endpoint reported, `response_metadata` the rest (model name, finish reason: `length`
# means `max_tokens` cut the answer short, which the small CI profile does on purpose).

# %% [markdown]
# ## 2. A prompt-template chain
#
# A `PromptTemplate` turns a dict of variables into a prompt; `|` feeds it to the model
# and the model's message to `StrOutputParser`, which keeps the text. The chain is itself
# a Runnable: `invoke`, `batch` and `stream` work on it as on the model.

# %%
meter.section = "2 template"
explain_prompt = PromptTemplate.from_template(
    "Explain {topic} to a tenant in one short sentence.")
explain_chain = explain_prompt | llm | StrOutputParser()

print("the prompt the model sees:", explain_prompt.format(topic=TOPIC))
print("the chain's steps:", [type(step).__name__ for step in explain_chain.steps])
print("answer:", explain_chain.invoke({"topic": TOPIC}))

# %% [markdown]
# ## 3. System and human message templates
#
# Chat models take a list of messages. `ChatPromptTemplate.from_messages` templates each
# one: the **system** message sets the role and the rules, the **human** message carries
# the question, and `MessagesPlaceholder` slots in a conversation so far (empty here,
# a chat history in an agent).

# %%
meter.section = "3 system+human"
chat_prompt = ChatPromptTemplate.from_messages([
    ("system", "You are a concise assistant for tenants in {province}. "
               "Answer in at most {words} words."),
    MessagesPlaceholder("history", optional=True),
    ("human", "{question}"),
])
variables = {"province": "the Free Province of Marvale", "words": 25,
             "question": "Can my landlord keep my deposit for repainting?"}
for message in chat_prompt.format_messages(**variables):
    print(f"{message.type:>6}: {message.content}")

qa_chain = chat_prompt | llm | StrOutputParser()
print("\nanswer:", qa_chain.invoke(variables))

# %% [markdown]
# ## 4. Structured output: a Pydantic parser with format instructions
#
# `PydanticOutputParser` does two jobs: `get_format_instructions()` writes the JSON schema
# into the prompt, and parsing validates the model's text against the Pydantic class.
# A 135M model rarely writes valid JSON, so this is where a chain meets failure. The
# lesson is the recovery, built in LCEL:
#
# * **attempt** `prompt | llm | parser`; a bad answer raises `OutputParserException`
#   (it carries the model's text in `llm_output`);
# * **retry with the error**: `with_fallbacks(..., exception_key="error")` hands the
#   exception to the fallback, which shows the model its own answer and the error;
# * **rule-based fallback**: a last fallback that never calls a model (here, a regular
#   expression over the passage), so the chain always returns a `DepositRule`, and a
#   field says which path produced it.

# %%
meter.section = "4 parser"


class DepositRule(BaseModel):
    rule: str = Field(description="the rule, in one short sentence")
    days: int = Field(description="the number of days the rule gives")


parser = PydanticOutputParser(pydantic_object=DepositRule)
print("format instructions:\n" + parser.get_format_instructions()[:400] + " ...")

extract_prompt = ChatPromptTemplate.from_messages([
    ("system", "Extract the rule from the passage.\n{format_instructions}\n"
               'Example answer: {{"rule": "Rent is due monthly.", "days": 30}}'),
    ("human", "{passage}"),
]).partial(format_instructions=parser.get_format_instructions())
structured_llm = ChatOpenAI(**chat.langchain_kwargs(), temperature=0, timeout=300, max_retries=1,
                            max_tokens=STRUCTURED_MAX_TOKENS, callbacks=[meter])
attempts: list[dict] = []  # what each path produced, to show below


def parsed_by(path: str):
    """The parser, logging the model's text and the outcome under ``path``."""

    def parse(message) -> dict:
        try:
            rule = parser.invoke(message)
        except OutputParserException as exc:
            attempts.append({"path": path, "model said": message.content, "error": str(exc)})
            raise
        attempts.append({"path": path, "model said": message.content, "error": ""})
        return {**rule.model_dump(), "path": path}

    return RunnableLambda(parse)


retry_prompt = ChatPromptTemplate.from_messages([
    ("system", "Extract the rule from the passage.\n{format_instructions}"),
    ("human", "{passage}"),
    ("ai", "{bad_answer}"),
    ("human", "That answer failed: {problem}\nReply with the JSON object only."),
]).partial(format_instructions=parser.get_format_instructions())


def retry_inputs(inputs: dict) -> dict:
    error: OutputParserException = inputs["error"]
    return {"passage": inputs["passage"], "bad_answer": error.llm_output or "",
            "problem": str(error).splitlines()[0][:200]}


def rule_based(inputs: dict) -> dict:
    """No model: the first '<n> days' in the passage and the sentence around it."""
    sentences = re.split(r"(?<=[.;])\s+", inputs["passage"])
    for sentence in sentences:
        found = re.search(r"(\d+)\s+days", sentence)
        if found:
            attempts.append({"path": "rule-based", "model said": "", "error": ""})
            return {"rule": sentence.strip(), "days": int(found.group(1)), "path": "rule-based"}
    raise ValueError("no '<n> days' in the passage")


first_try = extract_prompt | structured_llm | parsed_by("attempt")
retry = RunnableLambda(retry_inputs) | retry_prompt | structured_llm | parsed_by("retry")
robust_extract = first_try.with_fallbacks(
    [retry, RunnableLambda(rule_based)],
    exceptions_to_handle=(OutputParserException,), exception_key="error")

passage = ("The deposit must be returned to the tenant within 21 days after the tenancy "
           "ends, unless the landlord has lodged a claim against it with the Provincial "
           "Deposit Registry within that period.")
result = robust_extract.invoke({"passage": passage})
for attempt in attempts:
    print(f"- {attempt['path']}: model said {attempt['model said'][:120]!r}")
    if attempt["error"]:
        print(f"  OutputParserException: {attempt['error'].splitlines()[0][:120]}")
print("\nresult:", result)
print("as the Pydantic object:", DepositRule.model_validate(result))

# %% [markdown]
# **A stronger model, and `with_structured_output`.** With a platform model the first
# attempt usually parses, and the fallbacks never run. Models with tool calling also
# offer `llm.with_structured_output(DepositRule)`: the schema travels as a tool (or a
# JSON-schema `response_format`) instead of prose in the prompt, and the reply arrives
# already parsed. agentcycle's model server renders tools into the prompt for models
# whose chat template ignores them (SmolLM2's does), so the call works against the
# bundled model too; with `include_raw=True` a miss comes back as `parsed=None` instead
# of an exception. Keep the fallback either way: a parser can always meet a bad answer.

# %%
meter.section = "4 structured"
structured = structured_llm.with_structured_output(
    DepositRule, method="function_calling", include_raw=True)
outcome = structured.invoke(f"Extract the rule from this passage: {passage}")
print("tool calls the model made:", outcome["raw"].tool_calls)
print("parsed:", outcome["parsed"])
print("parsing error:", outcome["parsing_error"])
if outcome["parsed"] is None:
    print("raw text instead of a tool call:", repr(outcome["raw"].content[:160]))

# %% [markdown]
# ## 5. Composing two chains: topic -> outline -> text
#
# The old `SimpleSequentialChain` is two Runnables in a row. `RunnablePassthrough.assign`
# adds each chain's output to the running dict, so the second chain sees the first one's
# result and the caller sees both (useful when debugging a pipeline).

# %%
meter.section = "5 compose"
outline_chain = (
    PromptTemplate.from_template("Write three short bullet points a guide on {topic} "
                                 "should cover.")
    | llm | StrOutputParser())
text_chain = (
    PromptTemplate.from_template("Write one short paragraph for tenants on {topic}, "
                                 "following this outline:\n{outline}")
    | llm | StrOutputParser())
topic_to_text = (RunnablePassthrough.assign(outline=outline_chain)
                 | RunnablePassthrough.assign(text=text_chain))

composed = topic_to_text.invoke({"topic": TOPIC})
print("outline (chain 1):\n" + composed["outline"])
print("\ntext (chain 2):\n" + composed["text"])

# %% [markdown]
# The equivalent without the intermediate output is
# `{"topic": itemgetter("topic"), "outline": outline_chain} | text_chain`: a dict in a
# chain is a `RunnableParallel`, whose branches run side by side on the same input.

# %%
parallel_form = {"topic": itemgetter("topic"), "outline": outline_chain} | text_chain
print(type(parallel_form.first).__name__, "->", type(parallel_form.last).__name__)

# %% [markdown]
# ## 6. Summarising a document: map-reduce
#
# The document is Part 2 of the (fictional) Residential Tenancy Act of Marvale, from
# agentcycle's bundled legal corpus. A long document does not fit one prompt, so:
# **split** it (`RecursiveCharacterTextSplitter` cuts at paragraph, then line, then
# sentence boundaries, with an overlap so no rule is cut in half), **map** a summary
# chain over the chunks with `batch`, and **reduce** the partial summaries into one.
# This Part would fit SmolLM2's 8k-token context whole ("stuffing"); map-reduce is the
# pattern for the documents that do not.

# %%
meter.section = "6 summarise"
document = (legal_corpus_dir() / SUMMARY_FILE).read_text()
splitter = RecursiveCharacterTextSplitter(chunk_size=CHUNK_SIZE, chunk_overlap=100)
chunks = splitter.split_text(document)
selected = chunks[:SUMMARY_CHUNKS] if SUMMARY_CHUNKS else chunks
print(f"{SUMMARY_FILE}: {len(document)} characters -> {len(chunks)} chunks "
      f"of <= {CHUNK_SIZE}; summarising {len(selected)}")

map_chain = (
    ChatPromptTemplate.from_messages([
        ("system", "Summarise the passage of a tenancy law in one sentence that keeps its "
                   "numbers. Reply with that sentence only."),
        ("human", "{chunk}")])
    | llm | StrOutputParser())
reduce_chain = (
    ChatPromptTemplate.from_messages([
        ("system", "Combine the partial summaries of a tenancy law into one short summary. "
                   "Reply with the summary only."),
        ("human", "{summaries}")])
    | llm | StrOutputParser())
map_reduce = (
    RunnableLambda(lambda chunks: [{"chunk": chunk} for chunk in chunks])
    | map_chain.map()  # the map step: one call per chunk (batch under the hood)
    | RunnableLambda(lambda parts: {"summaries": "\n".join(f"- {p}" for p in parts)})
    | RunnablePassthrough.assign(summary=reduce_chain))

summarised = map_reduce.invoke(selected)
print("partial summaries (map):\n" + summarised["summaries"])
print("\nsummary (reduce):\n" + summarised["summary"])

# %% [markdown]
# A cheap check of a summary of a law: which of the source's numbers (days, amounts,
# percentages) survive. It does not judge the prose, but it catches a summary that
# dropped or invented the facts that matter.

# %%
source_numbers = set(re.findall(r"\d+(?:\.\d+)?", "\n".join(selected)))
summary_numbers = set(re.findall(r"\d+(?:\.\d+)?", summarised["summary"]))
print(f"numbers in the summarised chunks: {sorted(source_numbers, key=float)}")
print(f"kept in the summary: {sorted(source_numbers & summary_numbers, key=float)}")
print(f"in the summary but not the source: {sorted(summary_numbers - source_numbers)}")

# %% [markdown]
# ## 7. Time and tokens per call
#
# Every call above went through `CallMeter`. On the platform LiteLLM also records each
# call with its cost (and Langfuse shows them as traces); this table is what the client
# itself sees: seconds per call, prompt and output tokens, and whether `max_tokens` cut
# the answer (`finish = length`).

# %%
calls = pd.DataFrame(meter.rows)
calls["tok/s"] = (calls["output_tok"] / calls["seconds"]).round(1)
print(calls.to_string(index=False))
per_section = calls.groupby("section", sort=False)[
    ["seconds", "prompt_tok", "output_tok"]].sum()
print(f"\n{len(calls)} calls, {calls['seconds'].sum():.1f} s, "
      f"{calls['prompt_tok'].sum()} prompt + {calls['output_tok'].sum()} output tokens")

fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
per_section["seconds"].plot.barh(ax=left, color="tab:blue", title="seconds per section")
per_section[["prompt_tok", "output_tok"]].plot.barh(ax=right, stacked=True,
                                                   title="tokens per section")
right.set_yticklabels([])
left.invert_yaxis()
right.invert_yaxis()
fig.tight_layout()
plt.show()

# %% [markdown]
# The prompt tokens dominate wherever a prompt carries instructions (section 4's format
# instructions are ~200 tokens): on a metered cloud model those are the cost, and the
# reason to keep schemas and system prompts short.
#
# ## Clean up
#
# Closing the stack stops the bundled model's server (nothing to stop on the platform).

# %%
stack.close()
print("closed")
