"""`agentcycle eval run|compare|list` through the CLI: gates and exit codes, the JSON,
HTML and MLflow results, and the comparison of two runs."""

import json
import re

from typer.testing import CliRunner

from agentcycle.cli.main import app

runner = CliRunner()

AGENT = """
FACTS = {i: f"{21 + i} days" for i in range(12)}


def ask(question):
    number = int(question.split()[-1].rstrip("?"))
    broken = BROKEN and number < 5
    return {"answer": "I do not know" if broken else f"It is {FACTS[number]} (§ {number}).",
            "sources": [{"source": "law.md", "heading": f"§ {number}. Rule", "text": "..."}]}
"""


def suite_dir(tmp_path, broken=False):
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "agent.py").write_text(f"BROKEN = {broken}\n" + AGENT)
    cases = "\n".join(f"  - {{id: c{i}, input: 'How long, case {i}?', keywords: ['{21 + i} "
                      f"days'], reference_sources: ['§ {i}'], "
                      f"tags: [{'low' if i < 5 else 'high'}]}}" for i in range(12))
    (tmp_path / "suite.yaml").write_text(
        f"name: toy\ncases:\n{cases}\nscorers: [keywords, context_recall]\n"
        "target: python:agent.py:ask\ngates: ['errors<=0']\n")
    return tmp_path / "suite.yaml"


def invoke(*args):
    result = runner.invoke(app, ["eval", *map(str, args)])
    return result.exit_code, result.output


def test_run_publishes_json_html_and_mlflow_and_gates_pass(tmp_path):
    suite = suite_dir(tmp_path)
    code, output = invoke("run", suite, "--gate", "accuracy>=0.9", "--out", tmp_path / "out",
                          "--json")
    assert code == 0, output
    summary = json.loads(output[output.index("{"):])
    assert summary["metrics"]["accuracy"] == 1.0
    assert [g["passed"] for g in summary["gates"]] == [True, True]

    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["run_id"] == summary["run_id"] and len(run["results"]) == 12
    html = (tmp_path / "out" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3, "three charts, embedded"
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", html), "no external resources"
    assert "accuracy&gt;=0.9" in html and "small local model" not in html

    import mlflow

    mlflow_run = mlflow.get_run(summary["mlflow_run_id"])
    assert mlflow_run.data.metrics["accuracy"] == 1.0
    assert mlflow_run.data.metrics["tag/low/accuracy"] == 1.0
    assert mlflow_run.data.params["suite"] == "toy"
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(mlflow_run.info.run_id)}
    assert {"cases.json", "report.html", "run.json"} <= artifacts
    from pathlib import Path

    table = json.loads(Path(mlflow.artifacts.download_artifacts(
        run_id=mlflow_run.info.run_id, artifact_path="cases.json")).read_text())
    assert len(table["data"]) == 12 and "score.keywords" in table["columns"]


def test_failed_gate_exits_1_and_bad_input_is_one_line(tmp_path):
    suite = suite_dir(tmp_path, broken=True)
    code, output = invoke("run", suite, "--gate", "keywords.pass_rate>=0.9", "--no-mlflow")
    assert code == 1 and "gate failed: keywords.pass_rate>=0.9" in output
    assert "FAIL" in output and "Traceback" not in output

    code, output = invoke("run", suite, "--gate", "acuracy>=0.9", "--no-mlflow")
    assert code == 1 and output.startswith("error:") and "unknown metric 'acuracy'" in output
    assert "keywords.pass_rate" in output, "the error lists the metrics"

    suite.write_text("name: toy\ncases:\n  - {id: a, input: x, tgas: [t]}\nscorers: [keywords]\n")
    code, output = invoke("run", suite)
    assert code == 1 and "Traceback" not in output
    assert "suite.yaml:3: case 0 (id 'a'): field 'tgas': unknown field" in output


def test_compare_lists_regressions_with_a_paired_test(tmp_path):
    good = suite_dir(tmp_path / "a")
    code, output = invoke("run", good, "--no-mlflow", "--json")
    run_a = json.loads(output[output.index("{"):])["run_id"]
    # The agent's code changes: the cache keys on it, so the new version is really asked.
    bad = suite_dir(tmp_path / "b", broken=True)
    code, output = invoke("run", bad, "--no-mlflow", "--json")
    run_b = json.loads(output[output.index("{"):])["run_id"]
    assert json.loads(output[output.index("{"):])["metrics"]["accuracy"] == 7 / 12

    code, output = invoke("compare", run_a, run_b, "--json")
    assert code == 0, output
    result = json.loads(output)
    assert [c["id"] for c in result["regressions"]] == [f"c{i}" for i in range(5)]
    assert result["improvements"] == [] and result["matched"] == 12
    assert result["mcnemar_p"] == 2 * 0.5 ** 5 and result["wilcoxon_p"] < 0.1

    code, output = invoke("compare", run_a, run_b)
    assert code == 0 and "5 regressions" in output and "McNemar p=0.0625" in output
    code, output = invoke("compare", run_a, "nope")
    assert code == 1 and "no eval run 'nope'" in output

    code, output = invoke("list", "--json")
    assert [r["run_id"] for r in json.loads(output)] == [run_b, run_a]


def test_a_small_local_judge_is_flagged_in_the_report(tmp_path):
    """The bundled model as judge (served on this machine as 'base'): the report warns.
    Its protocol is spoken by a fake here: a 135M judge is too slow for a unit test."""
    from helpers import BackgroundServer, fake_cloud_app

    judge_app = fake_cloud_app(answer='{"score": 4, "reason": "states Paris"}', model="base")
    (tmp_path / "agent.py").write_text("def ask(q):\n    return 'Paris is the capital.'\n")
    (tmp_path / "suite.yaml").write_text(
        "name: judged\ncases: [{id: a, input: 'Capital of France?', reference: Paris}]\n"
        "scorers: [{name: llm_judge, threshold: 0.0}]\ntarget: python:agent.py:ask\n")
    with BackgroundServer(judge_app) as judge:
        code, output = invoke("run", tmp_path / "suite.yaml", "--no-mlflow", "--out", tmp_path,
                              "--judge", f"openai:{judge.url}/v1#base?key=test-key")
    assert code == 0, output
    assert judge_app.state.requests[0]["auth"] == "Bearer test-key"
    assert "the judge is the small local model" in output
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["judge_is_small_local"] and run["judge_model"] == "base"
    assert run["results"][0]["scores"]["llm_judge"]["value"] > 0.5
    assert "the LLM judge is the small local" in (tmp_path / "report.html").read_text()


def test_an_interrupted_run_resumes_from_the_cli(tmp_path):
    (tmp_path / "agent.py").write_text(
        "import pathlib\nCALLS = []\n\n\ndef ask(q):\n"
        "    if len(CALLS) == 3 and pathlib.Path(__file__).with_name('stop').exists():\n"
        "        raise KeyboardInterrupt\n"
        "    CALLS.append(q)\n"
        "    pathlib.Path(__file__).with_name('log').open('a').write(q + '\\n')\n"
        "    return 'yes ' + q\n")
    (tmp_path / "stop").touch()
    cases = ", ".join(f"{{id: c{i}, input: q{i}, keywords: ['yes']}}" for i in range(6))
    (tmp_path / "suite.yaml").write_text(f"name: r\ncases: [{cases}]\nscorers: [keywords]\n"
                                         "target: python:agent.py:ask\n")
    code, output = invoke("run", tmp_path / "suite.yaml", "-c", "1", "--no-mlflow")
    assert code == 130 and "--resume" in output, output
    run_id = re.search(r"--resume (\S+)`", output).group(1)
    (tmp_path / "stop").unlink()
    code, output = invoke("run", tmp_path / "suite.yaml", "--resume", run_id, "--no-mlflow",
                          "--json")
    assert code == 0, output
    assert json.loads(output[output.index("{"):])["metrics"]["accuracy"] == 1.0
    asked = (tmp_path / "log").read_text().split()
    assert sorted(asked) == [f"q{i}" for i in range(6)], "each case asked exactly once"


def test_a_case_lacking_what_a_scorer_needs_is_one_error_line(tmp_path):
    """Every case raised the scorer's config error inside the runner's task group: the
    user got an ExceptionGroup traceback instead of the one line."""
    (tmp_path / "agent.py").write_text("def ask(q):\n    return 'ok'\n")
    (tmp_path / "suite.yaml").write_text(
        "name: t\ncases: [{id: a, input: q}, {id: b, input: r}]\nscorers: [tool_name]\n"
        "target: python:agent.py:ask\n")
    code, output = invoke("run", tmp_path / "suite.yaml", "--no-mlflow")
    assert code == 1 and "Traceback" not in output and "ExceptionGroup" not in output
    assert "error: scorer 'tool_name' needs expected_tools" in output


def test_bad_scorer_options_fail_before_any_call(tmp_path):
    (tmp_path / "agent.py").write_text(
        "import pathlib\n\n\ndef ask(q):\n"
        "    pathlib.Path(__file__).with_name('called').touch()\n    return '{}'\n")
    for scorer, message in (
            ('{name: regex, pattern: "([a"}', "scorers[0]: scorer 'regex': bad pattern"),
            ("{name: json_schema, schema: {type: 12}}", "scorer 'json_schema': invalid schema"),
            ("{name: regex, patern: a}", "scorer 'regex': bad options ['patern']")):
        (tmp_path / "suite.yaml").write_text(
            f"name: t\ncases: [{{id: a, input: q}}]\nscorers: [{scorer}]\n"
            "target: python:agent.py:ask\n")
        code, output = invoke("run", tmp_path / "suite.yaml", "--no-mlflow")
        assert code == 1 and message in output and "Traceback" not in output, output
    assert not (tmp_path / "called").exists(), "no case ran"


def test_out_that_is_a_file_and_a_csv_missing_a_column(tmp_path):
    suite = suite_dir(tmp_path)
    (tmp_path / "afile").write_text("keep")
    code, output = invoke("run", suite, "--no-mlflow", "--out", tmp_path / "afile")
    assert code == 1 and "--out" in output and "a file, not a folder" in output, output
    assert (tmp_path / "afile").read_text() == "keep"
    code, output = invoke("run", suite, "--no-mlflow", "--out", tmp_path / "afile" / "sub")
    assert code == 1 and "cannot create it" in output and "Traceback" not in output, output

    (tmp_path / "qa.csv").write_text("foo,bar\n1,2\n")
    suite.write_text("name: t\ndataset: {path: qa.csv, fields: {input: question}}\n"
                     "scorers: [keywords]\ntarget: python:agent.py:ask\n")
    code, output = invoke("run", suite, "--no-mlflow")
    assert code == 1 and "qa.csv:1: field 'input' maps to column 'question'" in output


def test_an_unreachable_target_errors_each_case_and_says_why(tmp_path):
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (tmp_path / "suite.yaml").write_text(
        "name: t\ncases: [{id: a, input: q, keywords: [x]}, {id: b, input: r, keywords: [x]}]"
        "\nscorers: [keywords]\n")
    code, output = invoke("run", tmp_path / "suite.yaml", "--no-mlflow", "--retries", "0",
                          "--target", f"openai:http://127.0.0.1:{port}/v1#base")
    # Nothing was measured: exit 1 even without a gate, so CI cannot go green on it.
    assert code == 1 and "Traceback" not in output, output
    assert "2 of 2 cases errored" in output and "ConnectError" in output
    assert "every case errored" in output


def test_compare_refuses_runs_without_common_cases_and_an_unknown_scorer(tmp_path):
    """Two different suites were 'compared' as 0 matched cases, p=1, not significant."""
    code, output = invoke("run", suite_dir(tmp_path / "a"), "--no-mlflow", "--json")
    run_a = json.loads(output[output.index("{"):])["run_id"]
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "suite.yaml").write_text(
        "name: other\ncases: [{id: z, input: 'How long, case 1?', keywords: [x]}]\n"
        "scorers: [keywords]\ntarget: python:../a/agent.py:ask\n")
    code, output = invoke("run", tmp_path / "b" / "suite.yaml", "--no-mlflow", "--json")
    run_b = json.loads(output[output.index("{"):])["run_id"]
    code, output = invoke("compare", run_a, run_b)
    assert code == 1 and output.startswith("error:") and "share no case id" in output
    code, output = invoke("compare", run_a, run_a, "--scorer", "similarity")
    assert code == 1 and "scorer 'similarity' is not in both runs" in output


def test_a_target_refusing_every_request_stops_with_one_line(tmp_path):
    """A wrong key or model (401/404) was retried on every case, then reported as a run
    of errored cases; it is one error line and exit 1, after one request."""
    from helpers import BackgroundServer, fake_cloud_app

    (tmp_path / "suite.yaml").write_text(
        "name: t\ncases: [{id: a, input: q, keywords: [x]}, {id: b, input: r, keywords: [x]}]"
        "\nscorers: [keywords]\n")
    for status in (401, 404):
        app = fake_cloud_app(fail_with=status)
        with BackgroundServer(app) as server:
            code, output = invoke("run", tmp_path / "suite.yaml", "--no-mlflow", "-c", "1",
                                  "--target", f"openai:{server.url}/v1#m")
        assert code == 1 and f"error: {server.url}/v1/chat/completions: HTTP {status}: rate " \
                             "limited" in output, output
        assert len(app.state.requests) == 1 and "Traceback" not in output


def test_sigterm_keeps_the_run_listed_for_resume(tmp_path):
    """A killed run (CI cancel, `kill`) left only its journal: no run.json, so `eval
    list` did not show it and nothing said how to resume."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    (tmp_path / "agent.py").write_text(
        "import pathlib, time\n\n\ndef ask(q):\n    time.sleep(0.2)\n"
        "    pathlib.Path(__file__).with_name('done-' + q).touch()\n    return 'ok'\n")
    cases = ", ".join(f"{{id: c{i}, input: q{i}, keywords: [ok]}}" for i in range(40))
    (tmp_path / "suite.yaml").write_text(f"name: k\ncases: [{cases}]\nscorers: [keywords]\n"
                                         "target: python:agent.py:ask\n")
    cli = Path(sys.executable).with_name("agentcycle")
    proc = subprocess.Popen([str(cli), "eval", "run", str(tmp_path / "suite.yaml"), "-c", "1",
                             "--no-mlflow"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    deadline = time.monotonic() + 60
    # A case is journaled after its target returns, and (one at a time) before the next
    # case starts: a third case begun means the first two are on record.
    while len(list(tmp_path.glob("done-*"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=30)[0]
    assert proc.returncode == 130 and "--resume" in output, output
    code, listed = invoke("list", "--json")
    runs = json.loads(listed)
    assert len(runs) == 1 and not runs[0]["finished"] and 2 <= runs[0]["cases"] < 40


def test_gates_on_a_tag_s_metrics(tmp_path):
    """Metrics by tag were logged (MLflow tag/<tag>/<metric>) but no gate could name them."""
    suite = suite_dir(tmp_path, broken=True)
    code, output = invoke("run", suite, "--no-mlflow", "--gate", "tag/high/accuracy>=1",
                          "--gate", "tag/low/keywords.mean<=0")
    assert code == 0 and "tag/high/accuracy>=1" in output, output
    code, output = invoke("run", suite, "--no-mlflow", "--gate", "tag/low/accuracy>=0.5")
    assert code == 1 and "gate failed: tag/low/accuracy>=0.5" in output
    code, output = invoke("run", suite, "--no-mlflow", "--gate", "tag/lo/accuracy>=0.5")
    assert code == 1 and "unknown metric 'tag/lo/accuracy'" in output


def test_an_unreachable_mlflow_keeps_the_run_and_queues_it(tmp_path, monkeypatch):
    """MLflow down: the run's files are kept (in --out too) and its MLflow run waits in
    the outbox (tests/test_mlflow_down.py publishes it to a real server)."""
    from agentcycle.evals.publish import publish
    from agentcycle.evals.results import EvalRun
    from agentcycle.observe.outbox import pending
    from agentcycle.settings import Settings
    from helpers import dead_url

    with dead_url() as url:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url.removesuffix("/v1"))
        run = EvalRun(run_id="r1", suite="s", target="t")
        publish(run, settings=Settings(), out=tmp_path / "out")
        assert [e["origin"] for e in pending(Settings())] == ["eval run r1"]
    assert run.mlflow_run_id is None and (tmp_path / "out" / "run.json").is_file()
