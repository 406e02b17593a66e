"""No lost data with MLflow down: a real `mlflow server` (SQLite backend) on 127.0.0.1,
stopped before a run or killed in the middle of one. The eval run and the fine-tune
finish, keep everything on disk, say so, and `agentcycle publish` sends them later,
once: publishing twice adds nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from agentcycle.serving.server import free_port
from helpers import BackgroundServer, cli_run, openai_fake_app

QA = [("When is a deposit returned?", "Within 21 days (section 1)."),
      ("How much notice does a tenant give?", "35 days' notice (section 2)."),
      ("Who pays for structural repairs?", "The landlord (section 3)."),
      ("Can the rent rise during a fixed term?", "No (section 4).")]


class MlflowServer:
    """`mlflow server` in its own process group, on one port, started and killed at will."""

    def __init__(self, root: Path):
        self.root, self.port, self.process = root, free_port(), None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        mlflow = Path(sys.executable).with_name("mlflow")
        with open(self.root / "server.log", "ab") as log:
            self.process = subprocess.Popen(
                [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(self.port),
                 "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
                 "--artifacts-destination", str(self.root / "artifacts"), "--workers", "1"],
                stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.root / "server.log").read_text()[-2000:]
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError("mlflow server did not start in 240 s")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)  # its uvicorn worker too
            self.process.wait()
        self.process = None


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    yield server
    server.kill()


@pytest.fixture
def pointed(mlflow_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    return mlflow_server


def client_for(server):
    from mlflow import MlflowClient

    return MlflowClient(server.url)


def runs(server, phase: str):
    from agentcycle.observe.tracing import setup_tracking
    from agentcycle.settings import Settings

    experiment = setup_tracking(Settings())
    return client_for(server).search_runs([experiment], f"tags.`agentcycle.phase` = '{phase}'")


def test_a_trace_store_that_is_down_does_not_stop_an_agent(monkeypatch):
    from agentcycle.observe.tracing import span

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    for _ in range(3):
        with span("agent", inputs={"question": "q"}) as current:
            current.set_outputs({"answer": "a"})
    assert time.monotonic() - started < 15


def test_a_damaged_outbox_entry_is_reported_and_kept_and_a_torn_metric_line_dropped(
        monkeypatch):
    """Runs recorded while MLflow was down, then damaged on disk: publish sends the
    readable ones to the embedded store and names the one it cannot read (exit 1)."""
    from agentcycle.observe.outbox import RunRecorder, outbox_dir, pending
    from agentcycle.settings import Settings

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    folders = []
    for name in ("whole", "torn-metrics", "broken-entry"):
        recorder = RunRecorder.start(Settings(), name, origin=name)
        recorder.log_params({"lr": 0.01})
        for step in range(3):
            recorder.log_metrics({"loss": 1.0 / (step + 1)}, step)
        assert recorder.finish() is None  # kept for publish
        folders.append(recorder.folder)
    with open(folders[1] / "metrics.jsonl", "a") as handle:
        handle.write('{"key": "loss", "val')  # killed mid-append
    (folders[2] / "entry.json").write_text('{"id": "x", "state": "pend')
    assert len(pending(Settings())) == 2
    # resumed after the kill: the torn line is cut, the new point is a line of its own
    resumed = RunRecorder.start(Settings(), "torn-metrics", entry_id=folders[1].name)
    resumed.log_metrics({"loss": 0.25}, 3)
    assert resumed.finish() is None
    # an entry naming another folder (publish deletes its entry's folder when done)
    victim = outbox_dir(Settings()).parent / "victim"
    victim.mkdir()
    (outbox_dir(Settings()) / "zz-hostile").mkdir()
    (outbox_dir(Settings()) / "zz-hostile" / "entry.json").write_text(json.dumps(
        {"id": "../victim", "state": "pending", "tags": {}, "params": {}, "tables": [],
         "artifacts": []}))

    monkeypatch.delenv("MLFLOW_TRACKING_URI")  # the embedded SQLite store: reachable
    code, output = cli_run("publish", "--json")
    assert code == 1, output
    report = json.loads("\n".join(line for line in output.splitlines()
                                  if not line.startswith("error:")))  # stderr, mixed in
    errors = {p["entry_id"]: p["error"] for p in report["published"] if p["error"]}
    assert errors.keys() == {folders[2].name, "zz-hostile"}
    assert errors[folders[2].name].startswith(f"{folders[2] / 'entry.json'} is damaged")
    assert "its id '../victim' is not its folder's name" in errors["zz-hostile"]
    assert sorted(p.name for p in outbox_dir(Settings()).iterdir()) == [folders[2].name,
                                                                       "zz-hostile"]
    assert victim.is_dir()

    from mlflow import MlflowClient

    settings = Settings()
    client = MlflowClient(settings.tracking_uri)
    published = client.search_runs([client.get_experiment_by_name(
        settings.mlflow_experiment).experiment_id])
    assert sorted(r.info.run_name for r in published) == ["torn-metrics", "whole"]
    losses = {run.info.run_name: [m.value for m in client.get_metric_history(
        run.info.run_id, "loss")] for run in published}
    assert losses == {"whole": [1.0, 0.5, pytest.approx(1 / 3)],
                      "torn-metrics": [1.0, 0.5, pytest.approx(1 / 3), 0.25]}


def eval_suite(tmp_path: Path, url: str) -> Path:
    cases = "\n".join(f"  - {{id: c{i}, input: 'Deposit, case {i}?', keywords: ['21 days']}}"
                      for i in range(4))
    (tmp_path / "suite.yaml").write_text(
        f"name: down\ncases:\n{cases}\nscorers: [keywords]\ntarget: 'openai:{url}/v1#fake'\n")
    return tmp_path / "suite.yaml"


def train(settings, base_model_dir, out: Path, stop_at: int | None = None, resume=False,
          on_step=None):
    from agentcycle.finetune import TrainParams, finetune

    examples = [{"prompt": [{"role": "user", "content": q}],
                 "completion": [{"role": "assistant", "content": a}]} for q, a in QA]

    def step(done, total, loss):
        if on_step:
            on_step(done)
        if done == stop_at:
            raise KeyboardInterrupt

    params = TrainParams(max_steps=3, top_layers=2, batch_size=2, save_steps=1,
                         max_length=128)
    return finetune(examples, out, base_model_dir, settings, params, resume=resume,
                    on_step=step)


@pytest.mark.slow
def test_down_from_the_start_then_published_once(tmp_path, pointed, settings,
                                                  base_model_dir):
    from agentcycle.observe.outbox import pending

    pointed.kill()
    # An eval run against a fake model: it finishes, keeps its files and says so.
    with BackgroundServer(openai_fake_app()) as model:
        started = time.monotonic()
        code, output = cli_run("eval", "run", str(eval_suite(tmp_path, model.url)))
    assert code == 0, output
    assert time.monotonic() - started < 60, "no waiting on MLflow's retries"
    assert "did not take run" in output and "agentcycle publish" in output, output
    [entry] = pending(settings)
    run_json = Path(entry["write_back"][0])
    assert json.loads(run_json.read_text())["mlflow_run_id"] is None

    # A fine-tune stopped at step 2 resumes with MLflow still down, then finishes.
    out = tmp_path / "tuned"
    with pytest.raises(KeyboardInterrupt):
        train(settings, base_model_dir, out, stop_at=2)
    result = train(settings, base_model_dir, out, resume=True)
    assert result.steps == 3 and result.resumed_from >= 1 and result.mlflow_pending
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert sorted(e["state"] for e in pending(settings)) == ["pending", "pending"]

    code, output = cli_run("publish")  # still down: one line, nothing lost
    assert code == 1 and output.count("error:") == 1 and "unreachable" in output, output
    assert len(pending(settings)) == 2

    pointed.start()
    code, output = cli_run("publish")
    assert code == 0 and "published" in output, output
    assert pending(settings) == []
    [evaluated] = runs(pointed, "evaluate")
    assert evaluated.data.metrics["accuracy"] == 1.0 and evaluated.data.params["suite"] == "down"
    assert json.loads(run_json.read_text())["mlflow_run_id"] == evaluated.info.run_id
    files = {a.path for a in client_for(pointed).list_artifacts(evaluated.info.run_id)}
    assert {"cases.json", "report.html", "run.json"} <= files
    [tuned] = runs(pointed, "finetune")
    history = client_for(pointed).get_metric_history(tuned.info.run_id, "train_loss")
    assert sorted({m.step for m in history}) == [1, 2, 3]  # a resume retrains from its checkpoint
    assert tuned.data.params["max_steps"] == "3" and tuned.info.status == "FINISHED"
    assert tuned.data.tags["agentcycle.model_dir"] == str(out.resolve())
    artifacts = {a.path for a in client_for(pointed).list_artifacts(tuned.info.run_id)}
    assert {"adapter", "data", "loss_curve.png"} <= artifacts

    code, output = cli_run("publish")  # twice: nothing new
    assert code == 0 and "nothing to publish" in output, output
    assert len(runs(pointed, "evaluate")) == 1 and len(runs(pointed, "finetune")) == 1


@pytest.mark.slow
def test_a_server_killed_mid_fine_tune(tmp_path, pointed, settings, base_model_dir):
    from agentcycle.observe.outbox import pending

    if pointed.process is None:
        pointed.start()

    def kill_at(done):
        if done == 1:
            pointed.kill()

    started = time.monotonic()
    result = train(settings, base_model_dir, tmp_path / "tuned", on_step=kill_at)
    assert result.steps == 3 and result.mlflow_pending and result.run_id
    assert time.monotonic() - started < 120
    [entry] = pending(settings)
    assert entry["state"] == "pending" and entry["run_id"] == result.run_id

    pointed.start()
    for _ in range(2):  # publishing twice adds no point and no run
        code, output = cli_run("publish")
        assert code == 0, output
    history = client_for(pointed).get_metric_history(result.run_id, "train_loss")
    assert sorted(m.step for m in history) == [1, 2, 3]
    run = client_for(pointed).get_run(result.run_id)
    assert run.info.status == "FINISHED" and "final_train_loss" in run.data.metrics
    assert [r.info.run_id for r in runs(pointed, "finetune")].count(result.run_id) == 1


CHILD = """
import sys
from agentcycle.observe.tracing import span

with span("first", inputs={"q": 0}) as current:
    current.set_outputs({"a": 0})
print("traced", flush=True)
sys.stdin.readline()  # the server is killed now
for i in range(3):
    with span("after", inputs={"q": i}) as current:
        current.set_outputs({"a": i})
print("answered", flush=True)
"""


@pytest.mark.slow
def test_an_agent_whose_trace_store_dies_answers_and_exits(tmp_path, pointed):
    if pointed.process is None:
        pointed.start()
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "traced"
        pointed.kill()
        started = time.monotonic()
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "answered"
        assert time.monotonic() - started < 5, "spans never wait for the store"
        child.wait(timeout=90)  # MLflow's default retries held the exit for minutes
        print(f"exited {time.monotonic() - started:.1f} s after its trace store died")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


@pytest.mark.slow
def test_mlflow_back_before_the_end_gets_the_run_at_once(tmp_path, pointed, settings,
                                                         base_model_dir):
    from agentcycle.observe.outbox import pending

    pointed.kill()

    def start_at(done):
        if done == 1:
            pointed.start()

    result = train(settings, base_model_dir, tmp_path / "tuned", on_step=start_at)
    assert result.mlflow_pending is None and result.run_id and pending(settings) == []
    history = client_for(pointed).get_metric_history(result.run_id, "train_loss")
    assert sorted(m.step for m in history) == [1, 2, 3]
