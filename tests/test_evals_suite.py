"""Suites: YAML, datasets (JSONL, CSV), and errors that name file, case, field and line."""

import json
import textwrap
import time

import pytest

from agentcycle.errors import ConfigError, DataError
from agentcycle.evals import Suite, load_suite
from agentcycle.evals.gates import check_gates, parse_gate


def write(path, text):
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def test_inline_cases_and_datasets_load_with_their_fields(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "qa.jsonl").write_text(
        json.dumps({"id": "q1", "question": "Cap?", "answer": "1.5 months (§ 8).",
                    "keywords": ["1.5 months"], "section": 8}) + "\n"
        + json.dumps({"id": "q2", "question": "Pets?", "answer": "1.75 months.",
                      "keywords": ["1.75"], "section": None}) + "\n")
    (tmp_path / "data" / "more.csv").write_text(
        "question,answer,keywords,tags\nWhen?,21 days,21 days|days,\"[\"\"deposits\"\"]\"\n")
    suite = load_suite(write(tmp_path / "suite.yaml", """
        name: mixed
        cases:
          - {id: inline, input: [{role: user, content: "Hi?"}], tags: [chat],
             expected_tools: [{name: lookup, arguments: {section: 8}}],
             thresholds: {keywords: 0.5}}
        dataset:
          - path: data/qa.jsonl
            fields: {reference_sources: "§ {section}"}
            tags: [legal]
          - path: data/more.csv
        scorers: [keywords]
        """))
    by_id = {c.id: c for c in suite.cases}
    assert list(by_id) == ["inline", "q1", "q2", "more-2"]
    assert by_id["inline"].question == "Hi?" and by_id["inline"].expected_tools[0].name == "lookup"
    assert by_id["q1"].input == "Cap?" and by_id["q1"].reference == "1.5 months (§ 8)."
    assert by_id["q1"].reference_sources == ["§ 8"] and by_id["q1"].tags == ["legal"]
    assert by_id["q1"].metadata == {"section": 8}
    assert by_id["q2"].reference_sources == [], "no section, no source"
    assert by_id["more-2"].keywords == ["21 days", "days"]
    assert by_id["more-2"].tags == ["deposits"]
    assert suite.bound_scorers()[0].name == "keywords"


def test_the_legal_suite_ships_and_loads():
    from agentcycle.demo import legal_suite_path

    suite = load_suite(legal_suite_path())
    assert suite.name == "legal-test" and len(suite.cases) >= 110  # issue 9: >= 100 held out
    assert suite.bound_scorers()[0].options.get("max_words") == 40  # pasting a passage fails
    assert all(c.keywords and c.reference_sources[0].startswith("§ ") for c in suite.cases)
    assert suite.target.startswith("rag:")
    names = [s.name for s in suite.bound_scorers()]
    assert names == ["keywords", "context_recall", "similarity"]
    from agentcycle.evals.results import summarize

    check_gates(summarize([], names, 0.0), suite.gates)  # its gates name real metrics


@pytest.mark.parametrize("body, fragments", [
    ("name: s\ncases:\n  - id: a\n    input: hi\n  - id: b\n    inptu: hello\n"
     "scorers: [keywords]\n",
     ["suite.yaml:5", "case 1 (id 'b')", "field 'input'", "suite.yaml:6", "field 'inptu'",
      "unknown field"]),
    ("name: s\nscorer: [keywords]\ncases: [{id: a, input: x}]\n",
     ["suite.yaml:2", "field 'scorer'", "unknown field"]),
    ("name: s\ncases:\n  - {id: a, input: x, thresholds: {keywords: high}}\nscorers: [keywords]\n",
     ["suite.yaml:3", "case 0 (id 'a')", "field 'thresholds.keywords'"]),
    ("name: s\ncases: [{id: a, input: x}, {id: a, input: y}]\nscorers: [keywords]\n",
     ["case 1 (id 'a')", "duplicate"]),
    ("name: s\ncases: [{id: a, input: x}\n", ["suite.yaml:3", "invalid YAML"]),
    ("- just a list\n", ["a YAML mapping"]),
])
def test_malformed_suites_name_file_case_field_and_line(tmp_path, body, fragments):
    path = tmp_path / "suite.yaml"
    path.write_text(body)
    with pytest.raises(DataError) as error:
        load_suite(path)
    for fragment in fragments:
        assert fragment in str(error.value), str(error.value)


def test_dataset_errors_name_the_data_file_line_and_field(tmp_path):
    (tmp_path / "qa.jsonl").write_text('{"id": "ok", "question": "q"}\n{"id": "bad"}\n')
    suite = write(tmp_path / "suite.yaml", """
        name: s
        dataset: {path: qa.jsonl}
        scorers: [keywords]
        """)
    with pytest.raises(DataError, match=r"qa.jsonl:2: case 'bad': field 'input'"):
        load_suite(suite)
    write(suite, "name: s\ndataset: {path: qa.jsonl, fields: {inptu: question}}\n"
                 "scorers: [keywords]\n")
    with pytest.raises(DataError, match="unknown case fields \\['inptu'\\]"):
        load_suite(suite)
    write(suite, "name: s\ndataset: {path: missing.jsonl}\nscorers: [keywords]\n")
    with pytest.raises(DataError, match="dataset file not found"):
        load_suite(suite)


def test_unknown_scorer_names_the_suite_and_entry(tmp_path):
    suite = Suite(name="s", cases=[], scorers=["keywords", "kewords"])
    with pytest.raises(ConfigError, match=r"scorers\[1\]: unknown scorer 'kewords'"):
        suite.bound_scorers()


def test_a_file_scorer_with_the_wrong_signature_says_so(tmp_path):
    (tmp_path / "mine.py").write_text("def has_hi(output, case):\n    return True\n"
                                      "def opts(case, output, ctx, *, n=1):\n    return True\n")
    for ref, message in [("./mine.py:has_hi", r"'has_hi' takes \(output, case\): a scorer is "
                                              r"\(case, output, ctx, \*\*options\)"),
                         ({"name": "./mine.py:opts", "m": 2}, r"bad options \['m'\]")]:
        suite = Suite(name="s", cases=[], scorers=[ref], path=tmp_path / "suite.yaml")
        with pytest.raises(ConfigError, match=message):
            suite.bound_scorers()
    import asyncio

    from agentcycle.evals import Case, Output
    bound = Suite(name="s", cases=[], scorers=["./mine.py:opts"],
                  path=tmp_path / "suite.yaml").bound_scorers()[0]
    with pytest.raises(TypeError, match="it returned bool, not a Score"):
        asyncio.run(bound.score(Case(id="a", input="q"), Output(text="a"), None))


def test_thresholds_and_duplicate_scorers():
    suite = Suite(name="s", scorers=["keywords", {"name": "contains", "value": "a"},
                                     {"name": "contains", "value": "b", "threshold": 0.2}],
                  thresholds={"keywords": 0.5, "contains": 0.9})
    bound = suite.bound_scorers()
    assert [(b.name, b.threshold) for b in bound] == [
        ("keywords", 0.5), ("contains", 0.9), ("contains_2", 0.2)]


def test_gates_parse_and_check():
    metrics = {"accuracy": 0.75, "keywords.mean": 0.8, "p95_latency_ms": 2500.0}
    results = check_gates(metrics, ["accuracy>=0.7", "keywords.mean >= 0.9",
                                    "p95_latency_ms<=2000", "accuracy>=70%"])
    assert [r.passed for r in results] == [True, False, False, True]
    assert str(parse_gate("accuracy >= 0.7")) == "accuracy>=0.7"
    with pytest.raises(ConfigError, match="unknown metric 'acuracy'.*accuracy, keywords.mean"):
        check_gates(metrics, ["acuracy>=0.7"])
    with pytest.raises(ConfigError, match="bad gate"):
        parse_gate("accuracy is high")


def test_cases_from_recorded_traces(tmp_path, settings):
    import mlflow

    from agentcycle.observe.tracing import setup_tracking, span

    setup_tracking(settings)
    for question, reply in (("Deposit cap?", "1.5 months"), ("Pets?", "1.75 months")):
        with span("rag agent", "AGENT", inputs={"question": question}) as current:
            current.set_outputs({"answer": reply})
        time.sleep(0.01)  # traces order by millisecond: two in one ms would tie
    with span("other", "CHAIN", inputs={"question": "not an agent run"}):
        pass
    mlflow.flush_trace_async_logging()
    suite = load_suite(write(tmp_path / "suite.yaml", """
        name: production
        traces: {last: 5, name: rag agent, reference_from_output: true, tags: [prod]}
        scorers: [similarity]
        """))
    assert [(c.input, c.reference) for c in suite.cases] == [
        ("Pets?", "1.75 months"), ("Deposit cap?", "1.5 months")]
    assert suite.cases[0].tags == ["trace", "prod"] and suite.cases[0].id.startswith("trace-")
    # No such experiment: the error says which suite asked for the traces.
    write(tmp_path / "suite.yaml", "name: p\ntraces: {experiment: nope}\nscorers: [keywords]\n")
    with pytest.raises(DataError, match=r"suite.yaml: traces: no MLflow experiment named 'nope'"):
        load_suite(tmp_path / "suite.yaml")


def test_binary_suite_and_dataset_files_are_one_error_line(tmp_path):
    """A non-UTF-8 suite or CSV raised UnicodeDecodeError with a traceback."""
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe name: x\n")
    with pytest.raises(DataError, match=r"bin.yaml: not UTF-8 text"):
        load_suite(tmp_path / "bin.yaml")
    (tmp_path / "qa.csv").write_bytes(b"\xff\xfe,a\n1,2\n")
    suite = write(tmp_path / "suite.yaml", "name: s\ndataset: {path: qa.csv}\n"
                                           "scorers: [keywords]\n")
    with pytest.raises(DataError, match=r"qa.csv: not UTF-8 text"):
        load_suite(suite)


def test_a_dataset_limit_below_one_is_an_error(tmp_path):
    """limit: -1 silently dropped the file's last case (records[:-1])."""
    (tmp_path / "qa.jsonl").write_text('{"question": "a"}\n{"question": "b"}\n')
    suite = write(tmp_path / "suite.yaml", "name: s\ndataset: {path: qa.jsonl, limit: -1}\n"
                                           "scorers: [keywords]\n")
    with pytest.raises(DataError, match=r"suite.yaml:2: field 'dataset.limit'"):
        load_suite(suite)


def test_expected_tools_as_bare_names_from_yaml_and_csv(tmp_path):
    """The docs' 'a|b' list cells failed for expected_tools: a name was not a ToolCall."""
    (tmp_path / "qa.csv").write_text("id,question,expected_tools\nc1,q,lookup|weather\n")
    suite = write(tmp_path / "suite.yaml", """
        name: s
        dataset: {path: qa.csv}
        cases: [{id: y, input: q, expected_tools: [lookup]}]
        scorers: [tool_name]
        """)
    cases = {c.id: c for c in load_suite(suite).cases}
    assert [t.name for t in cases["c1"].expected_tools] == ["lookup", "weather"]
    expected = cases["y"].expected_tools[0]
    assert expected.name == "lookup" and not expected.arguments


def test_a_key_given_twice_is_an_error(tmp_path):
    """YAML keeps the last of two equal keys: a case's first 'input' vanished silently."""
    suite = write(tmp_path / "suite.yaml", """
        name: s
        cases:
          - id: a
            input: first
            input: second
        scorers: [keywords]
        """)
    with pytest.raises(DataError, match=r"suite.yaml:5: key 'input' appears twice"):
        load_suite(suite)


def test_numbers_in_a_case_are_text(tmp_path):
    """`id: 1` or `keywords: [21]` was 'Input should be a valid string'."""
    suite = write(tmp_path / "suite.yaml", """
        name: s
        cases: [{id: 1, input: "How many days?", reference: 21, keywords: [21], tags: [2024]}]
        scorers: [keywords]
        """)
    case = load_suite(suite).cases[0]
    assert (case.id, case.reference, case.keywords, case.tags) == ("1", "21", ["21"], ["2024"])


def test_a_sample_keeps_the_suites_mix_where_a_limit_takes_its_head():
    from agentcycle.demo import legal_tools_suite_path

    suite = load_suite(legal_tools_suite_path())
    sample = suite.sampled(40)
    assert len(sample.cases) == 40 and len({c.id for c in sample.cases}) == 40
    no_call = [c for c in sample.cases if not c.expected_tools]
    assert len(no_call) >= 5  # the suite's no-call cases are in the sample...
    assert all(c.expected_tools for c in suite.limited(40).cases)  # ...not in its head
    assert suite.sampled(None) is suite and suite.sampled(10_000) is suite
