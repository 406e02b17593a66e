"""Bad input: one clear line, a non-zero exit, no traceback, nothing half-written."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from agentcycle.cli.main import app

runner = CliRunner()


def run(*args):
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def assert_clean_error(code, output, *fragments):
    assert code == 1, output
    assert "Traceback" not in output
    assert output.strip().startswith("error:")
    for fragment in fragments:
        assert fragment in output


def test_ingest_missing_folder(tmp_path):
    assert_clean_error(*run("rag", "ingest", str(tmp_path / "nope"), "-c", "x"), "not found")


def test_ingest_binary_file_keeps_the_previous_collection(tmp_path, settings, embedder):
    from agentcycle.rag import ChunkStore, ingest

    good = tmp_path / "good"
    good.mkdir()
    (good / "a.md").write_text("# A\n\nThe deposit is capped at 2 months.\n")
    ingest(good, "law", settings, embedder=embedder)
    (good / "b.md").write_bytes(b"\x00\x01binary")
    assert_clean_error(*run("rag", "ingest", str(good), "-c", "law"), "b.md", "binary")
    assert ChunkStore(settings, "law").count() == 1


def test_ask_unknown_collection():
    assert_clean_error(*run("rag", "ask", "q?", "-c", "nope"), "collection 'nope' does not exist")


def test_ask_unknown_model(tmp_path, settings, embedder):
    from agentcycle.rag import ingest

    (tmp_path / "a.md").write_text("# A\n\ntext\n")
    ingest(tmp_path, "law", settings, embedder=embedder)
    assert_clean_error(*run("rag", "ask", "q?", "-c", "law", "--model", "gpt-nope"),
                       "unknown model 'gpt-nope'")


def test_finetune_empty_and_malformed_data(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    out = tmp_path / "out"
    assert_clean_error(*run("finetune", str(empty), "--out", str(out)), "empty")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "a"}\n{oops\n')
    assert_clean_error(*run("finetune", str(bad), "--out", str(out)), "bad.jsonl:2")
    assert_clean_error(*run("finetune", str(tmp_path / "none.jsonl"), "--out", str(out)),
                       "not found")
    assert not out.exists()


def test_finetune_names_a_wrong_base_model_before_it_reads_data(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    out = tmp_path / "out"
    assert_clean_error(*run("finetune", str(data), "--out", str(out), "--base-model",
                            str(tmp_path / "none")), "unknown base model", "no such directory")
    (tmp_path / "empty").mkdir()
    assert_clean_error(*run("finetune", str(data), "--out", str(out), "--base-model",
                            str(tmp_path / "empty")), "not a Hugging Face model")
    assert not out.exists()


def test_serve_refuses_an_unknown_engine_or_port_before_loading_a_model(monkeypatch,
                                                                       tmp_path):
    monkeypatch.setenv("AGENTCYCLE_CHAT_MODEL", str(tmp_path / "never-read"))
    assert_clean_error(*run("serve", "--engine", "banana"), "unknown engine 'banana'")
    for port in ("0", "99999"):
        assert_clean_error(*run("serve", "--port", port), "a port is 1 to 65535")
        assert_clean_error(*run("router", "serve", "--config", "r.yaml", "--port", port),
                           "a port is 1 to 65535")


def test_finetune_refuses_to_overwrite(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    assert_clean_error(*run("finetune", str(data), "--out", str(out)), "already exists")
    assert (out / "keep.txt").read_text() == "precious"


def test_unknown_chat_model_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("AGENTCYCLE_CHAT_MODEL", str(tmp_path / "missing-model"))
    assert_clean_error(*run("serve"), "unknown chat model", "missing-model")


def test_doctor_json_lists_every_service():
    code, output = run("doctor", "--json")
    assert code == 0
    services = {row["service"]: row for row in json.loads(output)}
    assert {"chat model", "embedding model", "qdrant", "mlflow", "litellm", "langfuse",
            "nats"} <= set(services)
    assert services["qdrant"]["mode"] == "embedded"


def test_doctor_exits_1_when_a_configured_service_is_unreachable(monkeypatch):
    from agentcycle.serving.server import free_port

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    code, output = run("doctor", "--json")
    assert code == 1
    error = "error: unreachable: mlflow ("  # one line, on stderr (mixed in by the runner)
    assert output.count(error) == 1
    listing = output.replace(output[output.index(error):].splitlines()[0], "")
    rows = {row["service"]: row for row in json.loads(listing)}
    assert rows["mlflow"]["reachable"] is False and rows["qdrant"]["reachable"] is None


@pytest.mark.parametrize("args", [["rag", "ingest", "/nonexistent", "-c", "x"]])
def test_real_process_prints_one_line(args):
    done = subprocess.run([sys.executable, "-m", "agentcycle", *args], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == ["error: corpus folder not found: /nonexistent"]
    assert done.stdout == ""


def test_ask_through_the_platforms_litellm_gateway(monkeypatch, tmp_path, settings, embedder):
    """With LITELLM_ENDPOINT set, `--model NAME` goes through the gateway (a stand-in
    speaking the OpenAI protocol: the cloud cannot be reached from here)."""
    from agentcycle.rag import ingest
    from helpers import BackgroundServer, fake_cloud_app

    (tmp_path / "law.md").write_text("# Law\n\n## § 7. Deposits\nReturn within 21 days.\n")
    ingest(tmp_path, "law", settings, embedder=embedder)
    gateway = fake_cloud_app()
    with BackgroundServer(gateway) as server:
        monkeypatch.setenv("LITELLM_ENDPOINT", server.url + "/v1")
        monkeypatch.setenv("LITELLM_MASTER_KEY", "sk-gw")
        code, output = run("rag", "ask", "How long to return a deposit?", "-c", "law",
                           "--model", "gpt-4o-mini", "--json")
    assert code == 0, output
    answer = json.loads(output)
    assert {"answer", "sources", "model", "latency_ms", "prompt_tokens", "completion_tokens",
            "cost_usd"} <= set(answer)
    assert answer["model"] == "gpt-4o-mini" and "21 days" in answer["answer"]
    assert answer["sources"][0]["source"] == "law.md" and answer["cost_usd"] > 0
    request = gateway.state.requests[0]
    assert request["auth"] == "Bearer sk-gw" and request["body"]["model"] == "gpt-4o-mini"
    assert "Return within 21 days." in request["body"]["messages"][1]["content"]


def test_the_cli_reference_is_up_to_date():
    from pathlib import Path

    from agentcycle.cli.help_doc import render

    checked_in = Path(__file__).parent.parent / "docs" / "cli.md"
    assert checked_in.read_text().strip() == render().strip(), (
        "docs/cli.md is stale: python -m agentcycle.cli.help_doc > docs/cli.md")


def test_finetune_command_trains_merges_and_logs(tmp_path, settings, embedder):
    from agentcycle.rag import ingest

    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "law.md").write_text(
        "# Law\n\n## § 1. Deposits\nA deposit is returned within 21 days. Interest on "
        "it is paid at 2% a year.\n\n"
        "## § 2. Notice\nA tenant gives 35 days' notice.\n")
    ingest(tmp_path / "corpus", "law", settings, embedder=embedder)
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in [
        {"question": "When is a deposit returned?", "answer": "Within 21 days (§ 1).",
         "section": 1, "keywords": ["21 days"],
         "evidence": "A deposit is returned within 21 days."},
        {"question": "How much notice does a tenant give?", "answer": "35 days' notice (§ 2)."},
    ]) + "\n")
    out = tmp_path / "tuned"
    code, output = run("finetune", str(data), "--out", str(out), "--collection", "law",
                       "--max-steps", "2", "--top-layers", "2", "--answer-form", "quote",
                       "--keep-sentences", "1")
    assert code == 0, output
    assert "merged model" in output and (out / "model.safetensors").is_file()
    import mlflow

    [run_info] = mlflow.search_runs(output_format="list")
    assert run_info.data.params["examples"] == "2" and run_info.data.params["top_layers"] == "2"
    [artifact] = mlflow.MlflowClient().list_artifacts(run_info.info.run_id, "data")
    trained = mlflow.artifacts.load_text(f"runs:/{run_info.info.run_id}/{artifact.path}")
    # The prompt is the agent's: the retrieved section, cut by --keep-sentences 1 to its
    # sentence closest to the question.
    assert "A deposit is returned within 21 days." in trained
    assert "Interest on it" not in trained
    # --answer-form quote: a pair with evidence learns to quote it, then state the fact;
    # one without evidence trains on its answer as written.
    answers = [json.loads(line)["completion"][0]["content"] for line in trained.splitlines()]
    assert answers == ['§ 1: "A deposit is returned within 21 days." Answer: 21 days.',
                       "35 days' notice (§ 2)."]
