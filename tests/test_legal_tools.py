"""The legal example's tools, on the real corpus (search: real Qdrant local mode and the
real MiniLM), and the legal-tools suite checked against them: every expected call runs,
and every figure a case states is what the tool returns and what the Act says."""

from __future__ import annotations

import asyncio
import inspect
import re

import pytest

from agentcycle.evals.scoring import ScoreContext
from agentcycle.evals.session import gate_metrics
from agentcycle.evals.suite import load_suite
from agentcycle.evals.types import Output
from agentcycle.examples.legal import tools as legal
from agentcycle.examples.legal.tools import (
    TOOL_NAMES,
    LegalToolError,
    compute_deadline,
    days_between,
    get_section,
    legal_tools,
    max_deposit,
    max_rent_increase,
)

SUITE = legal.legal_corpus_dir().parent / "suites" / "legal-tools.yaml"


@pytest.fixture(scope="module")
def tools(tmp_path_factory, embedder):
    from agentcycle.settings import Settings

    settings = Settings(AGENTCYCLE_HOME=tmp_path_factory.mktemp("legal-tools"))
    return {fn.__name__: fn for fn in legal_tools(settings, embedder=embedder)}


@pytest.fixture(scope="module")
def suite():
    return load_suite(SUITE)


def test_get_section_reads_the_corpus_by_any_spelling():
    section = get_section("8")
    assert section["section"] == "§ 8" and section["heading"] == "§ 8. Deposit cap"
    assert section["part"] == "Part 2 — Deposits"
    assert section["text"].startswith("A landlord may not demand")
    assert "60 crowns per set of keys" in section["text"]
    assert "## " not in section["text"]  # the next section's heading is not swallowed
    for spelling in ("§ 8", "§8", "Section 8", "s. 8", "8."):
        assert get_section(spelling) == section
    assert get_section("36")["text"].endswith("4 crowns per day for storage.")
    assert len({get_section(str(n))["heading"] for n in range(1, 37)}) == 36


@pytest.mark.parametrize(("number", "message"), [
    ("99", "no section 99; sections are 1-36"),
    ("0", "no section 0; sections are 1-36"),
    ("deposits", "'deposits' is not a section number: give one like '8'"),
])
def test_get_section_errors_say_what_exists(number, message):
    with pytest.raises(LegalToolError, match=message) as error:
        get_section(number)
    assert isinstance(error.value, ValueError)  # what a tool runner reports to the model


def test_compute_deadline_counts_the_acts_periods():
    # 1 January 2025 was a Wednesday (a fact from the calendar, not from the tool).
    assert compute_deadline("2024-12-25", "agreement_copy")["weekday"] == "Monday"
    assert compute_deadline("2025-06-30", "deposit_return") == {
        "rule": "deposit_return", "section": "§ 11",
        "period": "within 21 days after the tenancy ends", "start_date": "2025-06-30",
        "deadline": "2025-07-21", "weekday": "Monday"}
    assert compute_deadline("2025-12-01", "rent_increase_notice")["deadline"] == "2025-09-02"
    # Working days: Friday + 2 is Tuesday; Friday 1 August + 4 is Thursday 7 August.
    assert compute_deadline("2025-01-03", "repair_acknowledgement")["deadline"] == "2025-01-07"
    assert compute_deadline("2025-08-01", "undisputed_deposit_release")["deadline"] == \
        "2025-08-07"
    # Form T-9: 4 calendar months; 7 for a long-term tenant. 31 October + 4 months ends on
    # the last day of February (29th in a leap year).
    assert compute_deadline("2023-10-31", "landlord_notice")["deadline"] == "2024-02-29"
    long_term = compute_deadline("2025-11-03", "landlord_notice", long_term_tenant=True)
    assert long_term["deadline"] == "2026-06-03" and "long-term" in long_term["period"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"start_date": "1 March 2025", "rule": "deposit_return"},
     "ISO date like 2025-03-01 .got '1 March 2025'"),
    ({"start_date": "2025-02-30", "rule": "deposit_return"}, "ISO date"),
    ({"start_date": "2025-03-01", "rule": "deposit_refund"},
     "unknown rule 'deposit_refund': use one of agreement_copy, "),
    ({"start_date": "2025-03-01", "rule": "deposit_return", "long_term_tenant": True},
     "long_term_tenant is for rule landlord_notice only"),
    ({"start_date": "9999-12-01", "rule": "landlord_notice"}, "outside the calendar"),
])
def test_compute_deadline_errors(kwargs, message):
    with pytest.raises(LegalToolError, match=message):
        compute_deadline(**kwargs)


def test_every_deadline_rule_is_offered_and_is_what_the_act_says():
    """The rule enum the model is offered is the table; each period is in its section."""
    from agentcycle.agents.tools import as_tools
    from agentcycle.examples.legal.tools import DEADLINES, LONG_TERM_NOTICE_MONTHS

    offered = as_tools([compute_deadline])["compute_deadline"].parameters
    assert offered["properties"]["rule"]["enum"] == list(DEADLINES)
    assert offered["required"] == ["start_date", "rule"]
    for name, deadline in DEADLINES.items():
        act = " ".join(get_section(deadline.section.removeprefix("§ "))["text"].split())
        figure = abs(deadline.days) or deadline.months
        assert re.search(rf"\b({figure}|{figure // 7} weeks)\b", act), name
        assert str(figure) in deadline.period or f"{figure // 7} weeks" in deadline.period
    assert re.search(rf"\b{LONG_TERM_NOTICE_MONTHS} months\b", " ".join(
        get_section("30")["text"].split()))


def test_days_between_and_its_errors():
    assert days_between("2025-03-01", "2025-09-01")["days"] == 184  # § 1's transition
    assert days_between("2025-04-01", "2025-03-01")["days"] == -31
    assert days_between("2024-02-28", "2024-03-01") == {
        "start_date": "2024-02-28", "end_date": "2024-03-01", "days": 2, "weeks": 0.29}
    with pytest.raises(LegalToolError, match="end_date must be an ISO date"):
        days_between("2025-03-01", "next Friday")


def test_max_deposit_follows_section_8():
    assert max_deposit(1000) == {"monthly_rent": 1000, "pets": False, "months_of_rent": 1.5,
                                 "max_deposit": 1500, "max_key_deposit_per_set": 60,
                                 "section": "§ 8"}
    assert max_deposit(950, pets=True)["max_deposit"] == 1662.5
    assert max_deposit(1100, pets=True)["max_deposit"] == 1925  # not 1925.0000000000002
    for bad in (0, -5, "a lot", True):
        with pytest.raises(LegalToolError, match="monthly_rent must be a positive amount"):
            max_deposit(bad)


def test_max_rent_increase_caps_and_the_premium_exemption():
    assert max_rent_increase(1250) == {"current_rent": 1250, "notice_days": 90,
                                       "section": "§ 16", "capped": True, "max_percent": 4,
                                       "max_increase": 50, "max_new_rent": 1300}
    assert max_rent_increase(1500, energy_band_b=True)["max_new_rent"] == 1590
    # The Tribunal's approval after major works wins over the band-B cap.
    assert max_rent_increase(2000, True, major_works_approved=True)["max_percent"] == 11
    assert max_rent_increase(8000)["capped"] is True  # 96,000 a year: not *above* it
    premium = max_rent_increase(8000.01)
    assert premium["capped"] is False and premium["max_new_rent"] is None
    assert "premium tenancy" in premium["note"] and "§ 3" in premium["note"]


def test_the_schemas_a_tool_agent_offers(tools):
    """What the model sees: every parameter described, the right ones required."""
    from langchain_core.tools import StructuredTool

    from agentcycle.agents.tools import as_tools

    assert tuple(tools) == TOOL_NAMES
    offered = as_tools(list(tools.values()))
    for name, fn in tools.items():
        # Strict parsing: an Args: entry that does not match the signature fails here.
        StructuredTool.from_function(fn, parse_docstring=True, error_on_invalid_docstring=True)
        schema = offered[name].parameters
        signature = inspect.signature(fn)
        assert set(schema["properties"]) == set(signature.parameters)
        assert all(p.get("description") for p in schema["properties"].values()), name
        assert set(schema.get("required", [])) == {
            p for p, v in signature.parameters.items() if v.default is inspect.Parameter.empty}
        assert offered[name].description and "Args:" not in offered[name].description
    assert offered["compute_deadline"].parameters["properties"]["long_term_tenant"][
        "type"] == "boolean"


def test_search_corpus_on_the_ingested_collection(tools):
    search = tools["search_corpus"]
    results = search("deposit return deadline", top_k=5)
    assert len(results) == 5 and results[0]["section"] == "§ 11"
    assert set(results[0]) == {"section", "heading", "text", "score"}
    assert results[0]["heading"] == "§ 11. Return of the deposit"
    assert "within 21 days" in results[0]["text"]
    sections = [r["section"] for r in results]
    assert len(set(sections)) == len(sections)  # one entry per section
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert [r["section"] for r in search("late fee for rent", top_k=1)] == ["§ 18"]
    with pytest.raises(LegalToolError, match="top_k must be between 1 and 10"):
        search("deposit", top_k=50)
    with pytest.raises(LegalToolError, match="query is empty"):
        search("  ")


def test_legal_tools_reuse_an_existing_collection(embedder, tmp_path):
    """Ingesting happens only when the collection is missing (the module's tool set, on
    a fresh home, found the real corpus above); one that exists is searched as it is."""
    from agentcycle.examples import LEGAL_COLLECTION
    from agentcycle.rag import Chunk, ChunkStore
    from agentcycle.settings import Settings

    settings = Settings(AGENTCYCLE_HOME=tmp_path / "home")
    ChunkStore(settings, LEGAL_COLLECTION).replace(
        [Chunk(text="only chunk", source="x.md", index=0, heading="§ 99. Test")],
        [embedder.embed(["only chunk"])[0]])
    tools = {fn.__name__: fn for fn in legal_tools(settings, embedder=embedder)}
    assert [r["section"] for r in tools["search_corpus"]("anything", top_k=3)] == ["§ 99"]


# --- the suite against the tools ---------------------------------------------------------


def test_suite_shape(suite):
    assert len(suite.cases) >= 60
    quiet = [c for c in suite.cases if not c.expected_tools]
    assert len(quiet) >= 10 and all("no-call" in c.tags for c in quiet)
    multi = {c.id for c in suite.cases if len(c.expected_tools) > 1}
    assert len(multi) >= 5
    for case in suite.cases:
        names = {call.name for call in case.expected_tools}
        assert names <= set(TOOL_NAMES), case.id
        assert {t for t in case.tags if t.startswith("tool:")} == {f"tool:{n}" for n in names}
        assert ("multi-call" in case.tags) == (case.id in multi)
        assert ("call" in case.tags) == bool(names) != ("no-call" in case.tags)
    # Every tool is exercised, and every scorer the suite names resolves with its options.
    assert {c.name for case in suite.cases for c in case.expected_tools} == set(TOOL_NAMES)
    scorers = {b.name: b for b in suite.bound_scorers()}
    assert scorers["valid_tool_calls"].options["tools"] == list(TOOL_NAMES)


def test_suite_defaults_are_the_tools_defaults(suite):
    """exact_args fills in defaults: they must be the functions' own."""
    defaults = next(b for b in suite.bound_scorers() if b.name == "exact_args").options[
        "defaults"]
    for name, values in defaults.items():
        signature = inspect.signature(getattr(legal, name))
        assert values == {p: v.default for p, v in signature.parameters.items()
                          if v.default is not inspect.Parameter.empty}, name


def _run(tools, case, call):
    arguments = dict(call.arguments)
    if call.name == "search_corpus":
        arguments.setdefault("query", case.question)  # free text: the question itself
    return tools[call.name](**arguments)


def test_every_expected_call_runs_and_gives_the_stated_answer(suite, tools):
    checked = 0
    for case in suite.cases:
        results = [_run(tools, case, call) for call in case.expected_tools]
        for key, value in case.metadata.get("expect", {}).items():
            got = [r[key] for r in results if isinstance(r, dict) and key in r]
            assert value in got, f"{case.id}: {key} {value!r}, the tool says {got}"
            if value is not None and not isinstance(value, bool):
                assert str(value) in case.reference, case.id  # the reference states it
            checked += 1
        for call, result in zip(case.expected_tools, results, strict=True):
            if call.name == "search_corpus":  # the question finds its section first
                assert result[0]["section"] == case.reference_sources[0], case.id
    assert checked >= 40


def test_every_case_is_grounded_in_the_act(suite):
    """The rule a figure comes from (metadata.rule) and the keywords of the cases that
    read the Act are in the cited section's text."""
    for case in suite.cases:
        texts = " ".join(get_section(s)["text"] for s in case.reference_sources)
        if "rule" in case.metadata:
            assert case.metadata["rule"] in texts, case.id
        if {c.name for c in case.expected_tools} & {"get_section", "search_corpus"} and not (
                case.metadata.get("expect")):
            assert all(k in texts for k in case.keywords), case.id
        assert all(k.lower() in (case.reference or "").lower() for k in case.keywords), case.id


def test_the_reference_behaviour_passes_every_scorer_and_silence_fails(suite):
    """A perfect agent (the expected calls, the reference answer) passes every case; an
    agent that never calls a tool fails every call case on right_tool and no_call."""
    ctx = ScoreContext()
    scorers = suite.bound_scorers()
    for case in suite.cases:
        perfect = Output(text=case.reference or "Hello! I answer tenancy questions.",
                         tool_calls=case.expected_tools, steps=len(case.expected_tools) + 1)
        for bound in scorers:
            score = asyncio.run(bound.score(case, perfect, ctx))
            assert score.passed, f"{case.id}: {bound.name}: {score.explanation}"
        if case.expected_tools:
            silent = Output(text=case.reference or "")
            for name in ("right_tool", "exact_args", "no_call"):
                bound = next(b for b in scorers if b.name == name)
                assert not asyncio.run(bound.score(case, silent, ctx)).passed, (case.id, name)


def test_the_suite_gates_fail_an_agent_that_never_calls_a_tool(suite):
    """valid_tool_calls alone is vacuous without calls: the gates must not pass silence."""
    from agentcycle.evals import CallableTarget, check_gates
    from agentcycle.evals.runner import run_suite_sync

    silent = run_suite_sync(suite, CallableTarget(lambda q: "I cannot say.", key="silent"),
                            concurrency=4, retries=0)
    assert silent.metrics["valid_tool_calls.mean"] == 1.0  # nothing invalid: nothing called
    metrics = gate_metrics(silent.metrics, silent.tags)
    failed = {r.gate.metric for r in check_gates(metrics, suite.gates) if not r.passed}
    assert {"tag/call/right_tool.pass_rate", "tag/call/exact_args.pass_rate"} <= failed


def test_the_suite_gates_count_only_whole_calls_on_the_cases_that_expect_one(suite):
    """An agent that gets the tool right but one argument wrong everywhere, and keeps
    quiet where it should, has high exact_args means (partial credit, no-call cases
    counted in): the gate on exact arguments must still fail it."""
    from agentcycle.evals import CallableTarget, check_gates
    from agentcycle.evals.runner import run_suite_sync
    from agentcycle.evals.types import ToolCall

    by_input = {case.input: case for case in suite.cases}

    def nearly(question: str) -> Output:
        calls = [ToolCall(name=c.name, arguments={**c.arguments, "start_date": "2020-01-01"}
                          if "start_date" in c.arguments else c.arguments)
                 for c in by_input[question].expected_tools]
        return Output(text="", tool_calls=calls)

    run = run_suite_sync(suite, CallableTarget(nearly, key="nearly"), concurrency=4,
                         retries=0)
    metrics = gate_metrics(run.metrics, run.tags)
    assert metrics["exact_args.mean"] > 0.8  # what the gate used to read
    results = {r.gate.metric: r for r in check_gates(metrics, suite.gates)}
    assert results["tag/call/right_tool.pass_rate"].passed
    assert not results["tag/call/exact_args.pass_rate"].passed


def test_the_tool_data_carries_the_tools_current_schemas():
    """Regenerate train.jsonl when a tool's signature or docstring changes."""
    from agentcycle.agents.tools import as_tools
    from agentcycle.finetune import read_jsonl

    offered = {name: t.openai_schema()["function"] for name, t in as_tools(
        [get_section, compute_deadline, days_between, max_deposit, max_rent_increase]).items()}
    [record] = read_jsonl(SUITE.parent.parent / "tooluse" / "train.jsonl")[:1]
    trained = {t["function"]["name"]: t["function"] for t in record["tools"]}
    for name, schema in offered.items():
        assert trained[name] == schema, name
