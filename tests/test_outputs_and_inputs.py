"""An output never destroys what a command reads, and damaged inputs are one error.

Each case here was found by a second engineer trying the CLI as a new user: the command
overwrote its own input and exited 0, or printed a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat

import pytest

from agentcycle._files import check_outputs
from agentcycle.errors import ConfigError, DataError
from helpers import assert_clean_error, cli_run


def test_check_outputs_refuses_an_input_a_folder_a_file_parent_and_an_input_folders_file(
        tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("{}\n")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "part1.md").write_text("# Part 1\n")
    with pytest.raises(DataError, match="--out and the input are the same file"):
        check_outputs({"the input": data}, {"--out": tmp_path / "." / "d.jsonl"})
    with pytest.raises(DataError, match="--out .* is a directory"):
        check_outputs({"the input": data}, {"--out": corpus})
    with pytest.raises(DataError, match="a part of its path is a file"):
        check_outputs({"the input": data}, {"--out": data / "x.jsonl"})
    with pytest.raises(DataError, match="is a file of the corpus"):
        check_outputs({"the corpus": corpus}, {"--out": corpus / "part1.md"})
    with pytest.raises(DataError, match="--b and --a are the same file"):
        check_outputs({}, {"--a": tmp_path / "o.jsonl", "--b": tmp_path / "o.jsonl"})
    # A new file beside the inputs, or in an input folder, is fine.
    check_outputs({"the input": data, "the corpus": corpus},
                  {"--out": tmp_path / "new.jsonl", "--other": corpus / "qa.jsonl"})


def test_data_generate_never_writes_over_a_corpus_document(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    document = corpus / "deposits.md"
    document.write_text("# Deposits\n\nA landlord must return a deposit within 21 days.\n")
    before = document.read_text()
    code, out = cli_run("data", "generate", str(corpus), "-o", str(document))
    assert_clean_error(code, out, "is a file of the corpus")
    assert document.read_text() == before


def test_data_from_evals_never_writes_over_its_eval_run(tmp_path):
    from agentcycle.evals import Case, Suite
    from agentcycle.evals.results import runs_dir
    from agentcycle.evals.runner import run_suite_sync
    from agentcycle.evals.targets import CallableTarget

    suite = Suite(name="s", cases=[Case(id="a", input="Q?", reference="yes")],
                  scorers=["exact"])
    run_suite_sync(suite, CallableTarget(lambda q: "yes", key="k"), concurrency=1)
    [folder] = runs_dir().iterdir()
    run_json = folder / "run.json"
    before = run_json.read_text()
    for out in (run_json, folder / "journal.jsonl"):
        code, output = cli_run("data", "from-evals", folder.name, "-o", str(out))
        assert_clean_error(code, output, "the eval run" if out == run_json else "the run's folder")
    copy = shutil.copy(run_json, tmp_path / "myrun.json")
    code, output = cli_run("data", "from-evals", str(copy), "-o", str(copy))
    assert_clean_error(code, output, "--out and the eval run are the same file")
    assert run_json.read_text() == before
    assert json.loads(copy.read_text())["run_id"]


def test_router_commands_never_write_over_their_inputs(tmp_path):
    from agentcycle.examples import legal_corpus_dir

    config = tmp_path / "router.yaml"
    shutil.copy(legal_corpus_dir().parent.parent / "router.yaml", config)
    before = config.read_text()
    code, out = cli_run("router", "export-litellm", "-c", str(config), "-o", str(config))
    assert_clean_error(code, out, "--out and --config are the same file")
    assert config.read_text() == before

    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps({"input": f"question {i}", "passed": i % 2 == 0})
                               + "\n" for i in range(10)))
    labels = results.read_text()
    code, out = cli_run("router", "train-quality", str(results), "-o", str(results))
    assert_clean_error(code, out, "--out and the results are the same file")
    code, out = cli_run("router", "train-quality", str(results), "-o", str(tmp_path))
    assert_clean_error(code, out, "is a directory")
    code, out = cli_run("router", "quality-curve", str(results), "--plot",
                        str(tmp_path / "curve.jsonl"))
    assert_clean_error(code, out, "give a path ending in .png")
    code, out = cli_run("router", "quality-curve", str(results), "--plot",
                        str(results / "curve.png"))
    assert_clean_error(code, out, "a part of its path is a file")
    assert results.read_text() == labels
    assert not list(tmp_path.glob(".*"))  # no stray temp file


def test_a_gguf_export_never_writes_over_the_models_own_files(tmp_path):
    from agentcycle.finetune import export_gguf

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "llama"}))
    weights = model / "model.safetensors"
    weights.write_bytes(b"weights")
    with pytest.raises(DataError, match="is a file of the model"):
        export_gguf(model, weights, overwrite=True)
    assert weights.read_bytes() == b"weights"
    code, out = cli_run("export", "gguf", str(model), "--out", str(weights / "x.gguf"))
    assert_clean_error(code, out, "a part of its path is a file")
    (model / "config.json").write_text("{bad")
    code, out = cli_run("export", "gguf", str(model), "--out", str(tmp_path / "m.gguf"))
    assert_clean_error(code, out, "config.json: not a readable model config")


def test_a_dataset_card_that_cannot_be_written_fails_before_the_report(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"question": "Q?", "answer": "A."}) + "\n")
    (tmp_path / "d.card.md").mkdir()
    code, out = cli_run("data", "validate", str(data), "--card")
    assert_clean_error(code, out, "the card", "is a directory")


def test_manifests_refuse_a_k8s_that_is_a_file_or_a_link_and_keep_the_folder_readable(
        tmp_path):
    from agentcycle.deploy.manifests import write_manifests

    project = tmp_path / "app"
    project.mkdir()
    (project / "k8s").write_text("mine")
    with pytest.raises(ConfigError, match="k8s is a file"):
        write_manifests(project, {"a.yaml": "kind: x\n"})
    (project / "k8s").unlink()
    (project / "k8s").symlink_to(project)
    with pytest.raises(ConfigError, match="k8s is a symbolic link"):
        write_manifests(project, {"a.yaml": "kind: x\n"})
    (project / "k8s").unlink()
    target = write_manifests(project, {"a.yaml": "kind: x\n"})
    assert stat.S_IMODE(target.stat().st_mode) & 0o055 == 0o055  # not mkdtemp's 0700
    assert sorted(p.name for p in project.iterdir()) == ["k8s"]  # no stray staging


def test_damaged_stores_and_files_are_one_error(tmp_path):
    from agentcycle.agents.workflow.store import Ledger
    from agentcycle.evals.datasets import load_dataset
    from agentcycle.settings import Settings
    from agentcycle.templates._render import read_answers

    settings = Settings(home=tmp_path / "home")
    settings.home.mkdir()
    (settings.home / "workflows.db").write_text("garbage, not sqlite")
    with pytest.raises(ConfigError, match="not a usable SQLite database"):
        Ledger(settings)
    with pytest.raises(sqlite3.DatabaseError):  # the file was left for the user
        sqlite3.connect(settings.home / "workflows.db").execute("SELECT 1 FROM x")

    project = tmp_path / "proj"
    project.mkdir()
    (project / ".copier-answers.yml").write_text("_src_path: x\ngarbage: [\n")
    with pytest.raises(DataError, match=r"copier-answers.yml:3: invalid YAML"):
        read_answers(project)

    cases = tmp_path / "qa.jsonl"
    cases.write_text(json.dumps({"question": "Q?"}) + "\n")
    with pytest.raises(DataError, match="field template 'Q {'"):
        load_dataset(cases, {"input": "Q {"}, [])


@pytest.mark.parametrize("args", [
    ["rag", "ingest", ".", "-c", "c", "--overlap", "-5"],
    ["rag", "ingest", ".", "-c", "c", "--chunk-size", "0"],
    ["rag", "ask", "q", "-c", "c", "--top-k", "0"],
    ["rag", "ask", "q", "-c", "c", "--max-tokens", "0"],
])
def test_rag_numbers_out_of_range_are_usage_errors(args):
    code, out = cli_run(*args)
    assert code == 2 and "Traceback" not in out and "Invalid value" in out, out


ROUTER_YAML = """
backends:
  a: {model: openai/a, api_base: "http://127.0.0.1:1/v1"}
  b: {model: openai/b, api_base: "http://127.0.0.1:2/v1"}
"""


@pytest.mark.parametrize("extra, message", [
    ("routes: {r: {backends: [a, a]}}", "backend a listed twice in one route"),
    ("routes: {r: {backends: [a, b], policies: [{ab: {arms: {a: .nan, b: 1}}}]}}",
     "finite number"),
    ("cooldown_s: .inf", "finite number"),
    ("  c: {model: openai/c, api_base: not a url}", "api_base"),
    ('  c: {model: "", api_base: "http://x/v1"}', "model"),
])
def test_router_check_refuses_values_that_would_route_nothing(tmp_path, extra, message):
    """Each was reported "ok" by `router check`."""
    config = tmp_path / "router.yaml"
    config.write_text(ROUTER_YAML + extra + "\n")
    code, out = cli_run("router", "check", "-c", str(config))
    assert_clean_error(code, out, message)


def test_resume_takes_a_run_id_not_a_path_and_jsonl_may_start_with_a_bom(tmp_path):
    from agentcycle.finetune import read_jsonl

    code, out = cli_run("eval", "run", str(tmp_path / "missing.yaml"), "--resume",
                        "../../../etc")
    assert code == 1 and "Traceback" not in out, out
    from agentcycle.evals import Case, Suite
    from agentcycle.evals.runner import run_suite_sync
    from agentcycle.evals.targets import CallableTarget

    suite = Suite(name="s", cases=[Case(id="a", input="Q?")], scorers=["exact"])
    with pytest.raises(DataError, match="not a path"):
        run_suite_sync(suite, CallableTarget(str, key="k"), resume="../../etc")
    data = tmp_path / "bom.jsonl"
    data.write_bytes(b"\xef\xbb\xbf" + json.dumps({"question": "Q?"}).encode() + b"\r\n")
    assert [r["question"] for r in read_jsonl(data)] == ["Q?"]


def test_the_folds_reported_are_the_folds_used():
    """`quality-curve --folds 50` on 10 cases printed "50-fold"."""
    from agentcycle.router.quality import folds_used

    assert folds_used(50, [True] * 6 + [False] * 4) == 4
    assert folds_used(5, [True] * 60 + [False] * 40) == 5
    assert folds_used(5, [True] * 9 + [False]) == 2  # StratifiedKFold's least


def test_deploy_refuses_to_delete_a_file_of_the_users_own_in_k8s(tmp_path):
    """k8s/ is replaced whole: a file agentcycle did not write stops it, and stays."""
    from agentcycle.deploy.manifests import dump_yaml, write_manifests

    project = tmp_path / "app"
    project.mkdir()
    ours = {"a.yaml": dump_yaml([{"kind": "ConfigMap"}])}
    write_manifests(project, ours)
    k8s = project / "k8s"
    (k8s / ".argocd-source-app.yaml").write_text("kustomize: {}\n")
    (k8s / ".argocd-source.yaml").write_text("kustomize: {}\n")
    (k8s / ".DS_Store").write_bytes(b"\0")
    (k8s / "a.yaml").write_bytes((k8s / "a.yaml").read_bytes().replace(b"\n", b"\r\n"))
    write_manifests(project, ours)  # ours (CRLF too: git's autocrlf), the adapter's: kept
    assert sorted(p.name for p in k8s.iterdir()) == [
        ".argocd-source-app.yaml", ".argocd-source.yaml", "a.yaml"]
    (k8s / "extra").mkdir()
    (k8s / "extra" / "secret.yaml").write_text("kind: Secret\n")
    (k8s / "extra" / ".argocd-source-x.yaml").write_text("kustomize: {}\n")  # not kept there
    os.mkfifo(k8s / "pipe.yaml")  # refused without being opened (it would block)
    with pytest.raises(ConfigError, match=r"did not generate \(extra/.argocd-source-x.yaml, "
                                          r"extra/secret.yaml, pipe.yaml\)"):
        write_manifests(project, {"b.yaml": dump_yaml([{"kind": "ConfigMap"}])})
    assert sorted(p.name for p in k8s.iterdir()) == [
        ".argocd-source-app.yaml", ".argocd-source.yaml", "a.yaml", "extra", "pipe.yaml"]
    code, out = cli_run("deploy", str(project), "--dry-run")
    assert_clean_error(code, out, "extra/secret.yaml", "move them out of k8s/")
