"""Tool-use training data: records built from templates and the real legal tools, the
examples rendered exactly as the serving gate renders a request (checked against the
real gate and a real ToolAgent loop), the shipped train.jsonl, and its separation from
the held-out legal-tools suite."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest
import yaml
from fastapi import FastAPI, Request
from typer.testing import CliRunner

from agentcycle.errors import DataError
from agentcycle.evals.suite import load_suite
from agentcycle.examples import LEGAL_TOOL_PROMPT, legal_corpus_dir
from agentcycle.examples.legal import tools as legal
from agentcycle.examples.legal.tools import TOOL_NAMES
from agentcycle.finetune import read_jsonl, to_examples
from agentcycle.finetune.dataprep import normalise
from agentcycle.finetune.dataprep.toolcalls import (
    build_tool_dataset,
    load_tool_spec,
    spec_tools,
    tool_record_to_examples,
)
from agentcycle.serving.gate import build_gate
from helpers import BackgroundServer

LEGAL = legal_corpus_dir().parent
SPEC = LEGAL / "tooluse" / "spec.yaml"
TRAIN = LEGAL / "tooluse" / "train.jsonl"
SUITE = LEGAL / "suites" / "legal-tools.yaml"
PURE = [legal.get_section, legal.compute_deadline, legal.days_between, legal.max_deposit,
        legal.max_rent_increase]  # every legal tool but the search (it needs a store)


def small_spec(**template) -> dict:
    base = {"id": "deposit", "count": 3, "slots": {"rent": {"range": [500, 2000, 100]}},
            "prompts": ["Deposit cap on {{ rent | crowns }} crowns?"],
            "calls": [{"name": "max_deposit", "arguments": {"monthly_rent": "{{ rent }}"}}],
            "answer": "{{ result.max_deposit }} crowns (§ 8)."}
    return {"system": "You answer tenancy questions.",
            "templates": [{**base, **template},
                          {"id": "hi", "count": 2, "prompts": ["Hello", "Hey"],
                           "answer": "Hello! Ask me about tenancies."}]}


@pytest.fixture(scope="module")
def train() -> list[dict]:
    return read_jsonl(TRAIN)


@pytest.fixture(scope="module")
def suite():
    return load_suite(SUITE)


# --- building records ---------------------------------------------------------------------


def test_records_run_the_real_tools_in_the_openai_format():
    records = build_tool_dataset(small_spec(), PURE, seed=0)
    assert len(records) == 5
    call, hello = records[0], records[-1]
    system, user, asked, result, final = call["messages"]
    assert system == {"role": "system", "content": "You answer tenancy questions."}
    rent = int(re.search(r"on ([\d,]+) crowns", user["content"]).group(1).replace(",", ""))
    [wire] = asked["tool_calls"]
    assert asked["role"] == "assistant" and wire["type"] == "function"
    assert wire["function"] == {"name": "max_deposit",
                                "arguments": json.dumps({"monthly_rent": rent})}
    assert result == {"role": "tool", "tool_call_id": wire["id"],
                      "content": json.dumps(legal.max_deposit(rent))}
    assert final == {"role": "assistant",
                     "content": f"{legal.max_deposit(rent)['max_deposit']} crowns (§ 8)."}
    assert [t["function"]["name"] for t in call["tools"]] == [f.__name__ for f in PURE]
    assert {r["messages"][1]["content"] for r in records[3:]} == {"Hello", "Hey"}
    assert hello["messages"][2] == {"role": "assistant",
                                    "content": "Hello! Ask me about tenancies."}
    assert "tools" in hello and len(hello["messages"]) == 3
    assert len({r["messages"][1]["content"] for r in records}) == 5  # no prompt twice


def test_one_seed_one_dataset_and_templates_draw_independently():
    spec = small_spec(count=5)
    first = build_tool_dataset(spec, PURE, seed=0)
    assert build_tool_dataset(spec, PURE, seed=0) == first
    assert build_tool_dataset(spec, PURE, seed=1) != first
    # A template added in front leaves the records of the others as they were.
    grown = {**spec, "templates": [{"id": "extra", "prompts": ["Howdy"], "answer": "Hi!"},
                                   *spec["templates"]]}
    assert build_tool_dataset(grown, PURE, seed=0)[1:] == first


def test_a_list_slot_gives_each_value_its_share():
    """200 deadline records over 20 rules must teach every rule: independent draws left
    one rule a single record. A list slot deals its values in turn, shuffled."""
    rules = ["deposit_return", "deposit_lodging", "tenant_notice", "mould_works"]
    spec = small_spec(count=12, slots={"rule": rules, "date": {"date": ["2025-01-01",
                                                                        "2025-12-31"]}},
                      prompts=["{{ rule }} from {{ date }}?"],
                      calls=[{"name": "compute_deadline", "arguments": {
                          "start_date": "{{ date }}", "rule": "{{ rule }}"}}],
                      answer="{{ result.deadline }} ({{ result.section }}).")
    records = build_tool_dataset(spec, PURE, seed=3)[:12]
    drawn = Counter(json.loads(r["messages"][2]["tool_calls"][0]["function"]["arguments"])
                    ["rule"] for r in records)
    assert drawn == dict.fromkeys(rules, 3)


@pytest.mark.parametrize(("template", "message"), [
    ({"calls": [{"name": "nope", "arguments": {}}]}, "template 'deposit': calls an unknown "
     "tool .*the tools are: compute_deadline"),
    ({"calls": [{"name": "max_deposit", "arguments": {"monthly_rent": "lots"}}]},
     "template 'deposit': arguments .* do not fit max_deposit's schema: 'lots' is not of "
     "type 'number'"),
    ({"calls": [{"name": "max_deposit", "arguments": {"rent": 5}}]},
     "max_deposit has no parameter rent"),
    ({"calls": [{"name": "get_section", "arguments": {"number": "99"}}]},
     r"get_section\(\{'number': '99'\}\) failed: no section 99"),
    ({"prompts": ["Deposit on {{ rnet }}?"]}, "UndefinedError: 'rnet' is undefined"),
    ({"count": 40}, "only 16 distinct prompts for count 40"),
    ({"slots": {"rent": {"between": [1, 2]}}}, "slot 'rent': use a list"),
    ({"answer": None, "prompts": ["x"]}, None),
    ({"require": "{{ result.max_deposit > 10**6 }}"}, "the requirement .* fails for"),
])
def test_a_bad_template_is_one_clear_error_naming_it(template, message):
    spec = small_spec(**template)
    if template.get("answer", "") is None:
        del spec["templates"][0]["answer"]
        message = "template 'deposit': needs an 'answer'"
    with pytest.raises(DataError, match=message):
        build_tool_dataset(spec, PURE, seed=0)


def test_a_bad_spec_file(tmp_path):
    with pytest.raises(DataError, match="tool spec not found"):
        load_tool_spec(tmp_path / "none.yaml")
    (tmp_path / "bad.yaml").write_text("templates: [unclosed")
    with pytest.raises(DataError, match="bad.yaml:1: invalid YAML"):
        load_tool_spec(tmp_path / "bad.yaml")
    (tmp_path / "empty.yaml").write_text("system: hi\n")
    with pytest.raises(DataError, match="needs a 'templates' list"):
        load_tool_spec(tmp_path / "empty.yaml")
    (tmp_path / "five.yaml").write_text("system: hi\ntemplates: 5\n")
    with pytest.raises(DataError, match=r"five.yaml:2: templates: must be a list"):
        load_tool_spec(tmp_path / "five.yaml")
    (tmp_path / "typo.yaml").write_text("system: hi\ntemplate:\n  - prompts: [a]\n"
                                        "templates:\n  - prompts: [a]\n")
    with pytest.raises(DataError, match=r"typo.yaml:2: template: unknown key"):
        load_tool_spec(tmp_path / "typo.yaml")
    # A tools factory that fails, or returns what is not a tool, is named, not a traceback.
    for factory, message in [("os:getcwd", "failed: TypeError"),
                             ("json:loads", "failed: TypeError"),
                             ("os:sep", "is not a function")]:
        with pytest.raises(DataError, match=f"tools factory '{factory}' {message}"):
            spec_tools({"tools": factory, "templates": [{}]}, settings=None)
    with pytest.raises(DataError, match="needs a 'system' prompt"):
        build_tool_dataset({"templates": small_spec()["templates"]}, PURE, seed=0)


# --- records -> examples: what the gate renders -----------------------------------------


def reply_engine() -> FastAPI:
    """The engine's side of the protocol: answers the queued replies in order and records
    the requests the gate forwards (the prompt the model would see)."""
    app = FastAPI()
    app.state.requests, app.state.replies = [], []

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        app.state.requests.append(body)
        return {"id": "r", "object": "chat.completion", "created": 1, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop", "message": {
                    "role": "assistant", "content": app.state.replies.pop(0)}}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}}

    return app


@pytest.fixture(scope="module")
def legal_tool_set(tmp_path_factory, embedder):
    from agentcycle.settings import Settings

    home = tmp_path_factory.mktemp("tools-home")
    return legal.legal_tools(Settings(AGENTCYCLE_HOME=home), embedder=embedder)


@pytest.fixture(scope="module")
def engine_and_gate():
    app = reply_engine()
    with BackgroundServer(app) as engine, \
            BackgroundServer(build_gate(engine.url, "/models/smol", "base", "k")) as gate:
        yield app, gate


def _record(train, *tools):
    return next(r for r in train if [c["function"]["name"] for m in r["messages"]
                                     for c in m.get("tool_calls", [])] == list(tools))


def test_the_gate_forwards_each_example_prompt_and_parses_its_completion(train,
                                                                        engine_and_gate):
    """Each turn of a record, sent to the real gate as an OpenAI request: the engine gets
    the example's prompt, and the example's completion comes back as the record's calls."""
    import httpx

    app, gate = engine_and_gate
    record = _record(train, "max_deposit", "compute_deadline")
    messages = record["messages"]
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    for i, example in zip(turns, tool_record_to_examples(record), strict=True):
        app.state.requests.clear()
        app.state.replies = [example["completion"][0]["content"]]
        reply = httpx.post(f"{gate.url}/v1/chat/completions", headers={
            "Authorization": "Bearer k"}, json={"model": "base", "messages": messages[:i],
                                                "tools": record["tools"]}, timeout=30)
        assert reply.status_code == 200, reply.text
        assert app.state.requests[0]["messages"] == example["prompt"]
        message = reply.json()["choices"][0]["message"]
        wanted = messages[i]
        if wanted.get("tool_calls"):
            assert [c["function"] for c in message["tool_calls"]] == [
                c["function"] for c in wanted["tool_calls"]]
            assert message["content"] is None
        else:
            assert message["content"] == wanted["content"] and not message.get("tool_calls")


@pytest.mark.slow  # > 10 s here: LiteLLM's import and the corpus ingest
@pytest.mark.parametrize("tools", [("max_deposit", "compute_deadline"), ("days_between",), ()])
def test_a_tool_agent_through_the_gate_is_served_exactly_the_training_prompts(
        train, engine_and_gate, legal_tool_set, tools):
    """The real loop: ToolAgent -> Router (LiteLLM) -> gate -> an engine that answers with
    the training completions. What the engine is sent is each example's prompt, and the
    agent ends with the record's calls and answer."""
    from agentcycle.agents.tools import ToolAgent
    from agentcycle.router import Router
    from agentcycle.router.backends import local_backend

    app, gate = engine_and_gate
    record = _record(train, *tools)
    examples = tool_record_to_examples(record)
    assert len(examples) == (2 if tools else 1)
    app.state.requests.clear()
    app.state.replies = [e["completion"][0]["content"] for e in examples]
    router = Router([local_backend("base", f"{gate.url}/v1", "base", "k")], log_path=False,
                    tracing=False)
    agent = ToolAgent(router, legal_tool_set, system_prompt=record["messages"][0]["content"])
    try:
        result = agent.run(record["messages"][1]["content"])
    finally:
        router.close()
    assert result.status == "completed", result.error
    assert [r["messages"] for r in app.state.requests] == [e["prompt"] for e in examples]
    assert result.answer == record["messages"][-1]["content"]
    wanted = [c["function"] for m in record["messages"] for c in m.get("tool_calls", [])]
    assert [(c.name, c.arguments) for c in result.tool_calls] == [
        (w["name"], json.loads(w["arguments"])) for w in wanted]
    assert all(c.error is None for c in result.tool_calls)


def test_examples_are_the_gate_rendering_as_text(train):
    record = _record(train, "max_deposit", "compute_deadline")
    call, final = tool_record_to_examples(record)
    system = call["prompt"][0]["content"]
    assert system.startswith(LEGAL_TOOL_PROMPT + "\n\n# Tools\n") and "<tools>" in system
    assert [m["role"] for m in call["prompt"]] == ["system", "user"]
    assert call["completion"][0]["content"].count("<tool_call>\n{\"name\": ") == 2
    assert [m["role"] for m in final["prompt"]] == ["system", "user", "assistant", "user"]
    assert final["prompt"][2]["content"] == call["completion"][0]["content"]
    assert final["prompt"][3]["content"].count("<tool_response>") == 2  # one user turn
    assert final["completion"][0]["content"] == record["messages"][-1]["content"]


def test_to_examples_routes_tool_records_and_names_bad_ones(tmp_path, train):
    examples = to_examples(train, TRAIN)
    assert len(examples) == sum(m["role"] == "assistant" for r in train for m in r["messages"])
    assert all(isinstance(m["content"], str) for e in examples for m in e["prompt"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "q"}, {
        "role": "assistant", "tool_calls": [{"function": {}}]}], "tools": []}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:1: messages\[1\].tool_calls must be"):
        to_examples(read_jsonl(bad), bad)
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "q"}, {
        "role": "assistant", "content": "a"}], "tools": [{"name": "x"}]}) + "\n")
    with pytest.raises(DataError, match="bad.jsonl:1: 'tools' must be a list of"):
        to_examples(read_jsonl(bad), bad)


# --- the shipped data and the held-out suite ---------------------------------------------


def test_the_shipped_train_set(train):
    calls = Counter(c["function"]["name"] for r in train for m in r["messages"]
                    for c in m.get("tool_calls", []))
    quiet = [r for r in train if not any(m.get("tool_calls") for m in r["messages"])]
    assert len(train) >= 400 and set(calls) == set(TOOL_NAMES)
    assert 0.2 <= len(quiet) / len(train) <= 0.3
    assert all(r["messages"][0]["content"] == LEGAL_TOOL_PROMPT for r in train)
    users = [r["messages"][1]["content"] for r in train]
    assert len({normalise(u) for u in users}) == len(users)
    # Every pure tool's recorded result is what the tool returns on the recorded arguments,
    # and every answer after a call cites a section.
    pure = {f.__name__: f for f in PURE}
    for record in train:
        messages = record["messages"]
        asked = [c for m in messages for c in m.get("tool_calls", [])]
        results = [m["content"] for m in messages if m["role"] == "tool"]
        for call, result in zip(asked, results, strict=True):
            fn = pure.get(call["function"]["name"])
            if fn:
                assert json.loads(result) == fn(**json.loads(call["function"]["arguments"]))
        if asked:
            assert "§" in messages[-1]["content"], messages[1]["content"]
    spec = yaml.safe_load(SPEC.read_text())
    assert "agentcycle data tools" in SPEC.read_text().split("\ntools:")[0]
    assert spec["system_ref"] == "agentcycle.examples.legal:LEGAL_TOOL_PROMPT"


def test_every_turn_the_model_must_write_fits_the_demos_tool_turn_cap(train, suite,
                                                                     base_model_dir):
    # Two calls in one turn take up to 97 tokens with the end marker: a cap of 96 left no
    # margin, and a turn cut there loses the call that did not close. The cap must hold
    # the longest turn the data teaches and the longest the suite expects.
    from transformers import AutoTokenizer

    from agentcycle.demo import DemoOptions
    from agentcycle.serving.toolcalls import call_text

    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)

    def tokens(text: str) -> int:  # with the end-of-turn marker the model writes last
        return len(tokenizer(text + tokenizer.eos_token, add_special_tokens=False).input_ids)

    taught = max(tokens(e["completion"][0]["content"]) for r in train
                 for e in tool_record_to_examples(r))
    expected = max(tokens("\n".join(call_text({"function": c.model_dump()})
                                    for c in case.expected_tools))
                   for case in suite.cases if case.expected_tools)
    assert 90 <= max(taught, expected) < DemoOptions().tool_max_tokens


def test_the_suite_holds_out_new_cases(suite):
    held = [c for c in suite.cases if "held-out" in c.tags]
    assert len(suite.cases) >= 110 and len(held) >= 34
    assert sum(not c.expected_tools for c in suite.cases) >= 25


@pytest.mark.slow  # ~20 s: MiniLM embeds every train prompt and suite input
def test_no_train_prompt_equals_or_paraphrases_a_suite_input(train, suite, embedder):
    from agentcycle.finetune.dataprep import find_leaks

    users = [r["messages"][1]["content"] for r in train]
    inputs = [c.question for c in suite.cases]
    assert not set(users) & set(inputs)
    assert not {normalise(u) for u in users} & {normalise(i) for i in inputs}
    leaks = find_leaks(users, inputs, embedder, threshold=0.9)
    assert not leaks, "\n".join(leak.describe() for leak in leaks[:10])


@pytest.mark.slow
def test_train_jsonl_is_what_the_spec_generates(tmp_path, embedder):
    """The committed file is the spec's output (seed 0) on the real tools, search too."""
    from agentcycle.finetune.dataprep.toolcalls import spec_tools
    from agentcycle.settings import Settings

    spec = load_tool_spec(SPEC)
    tools = spec_tools(spec, Settings(AGENTCYCLE_HOME=tmp_path / "home"))
    built, built_scores = _search_scores_apart(build_tool_dataset(spec, tools, seed=0))
    shipped, shipped_scores = _search_scores_apart(
        [{k: v for k, v in r.items() if k != "_line"} for r in read_jsonl(TRAIN)])
    assert built == shipped
    # A search's cosine scores differ in the fourth decimal between CPUs (AVX2, AVX512):
    # the same passages in the same order, scores within that rounding.
    assert built_scores == pytest.approx(shipped_scores, abs=2e-4)


def _search_scores_apart(records: list[dict]) -> tuple[list[dict], list[float]]:
    """The records with each search result's score taken out, and those scores in order."""
    scores: list[float] = []
    for record in records:
        for message in record["messages"]:
            if message["role"] != "tool" or not message["content"].startswith("[{"):
                continue
            hits = json.loads(message["content"])
            scores += [hit.pop("score") for hit in hits if "score" in hit]
            message["content"] = json.dumps(hits)
    assert scores, "no search result in the records"
    return records, scores


# --- the command ------------------------------------------------------------------------


def test_data_tools_command(tmp_path, monkeypatch):
    from agentcycle.cli.main import app

    (tmp_path / "my_tools.py").write_text(
        "from agentcycle.examples.legal.tools import get_section, max_deposit\n"
        "def tools(settings):\n    return [get_section, max_deposit]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = {**small_spec(), "tools": "my_tools:tools"}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    out = tmp_path / "out" / "tools.jsonl"
    runner = CliRunner()
    done = runner.invoke(app, ["data", "tools", str(tmp_path / "spec.yaml"), "--out", str(out),
                               "--seed", "3"])
    assert done.exit_code == 0, done.output
    said = " ".join(done.output.split())
    assert "wrote 5 tool-use records" in said and "(3 with calls, 2 without)" in said
    assert len(read_jsonl(out)) == 5
    before = out.read_text()
    spec["templates"][0]["calls"][0]["name"] = "nope"
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    failed = runner.invoke(app, ["data", "tools", str(tmp_path / "spec.yaml"), "--out",
                                 str(out)])
    assert failed.exit_code == 1 and "Traceback" not in failed.output
    assert "error: template 'deposit': calls an unknown tool" in " ".join(failed.output.split())
    assert out.read_text() == before  # the old file is left whole
    missing = runner.invoke(app, ["data", "tools", str(tmp_path / "no.yaml"), "--out", str(out)])
    assert missing.exit_code == 1 and "tool spec not found" in missing.output
