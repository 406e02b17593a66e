"""The model registry on a real MLflow SQLite store: register with lineage and metrics,
promote only on passed gates, resolve models:/ URIs to a cached HF dir, a store that is
down, and models:/ where serve and the chat model take a model."""

import hashlib
import json
import shutil

import pytest
from typer.testing import CliRunner

from agentcycle.cli.main import app
from agentcycle.errors import ConfigError, ModelError, ServiceError
from agentcycle.evals.evidence import eval_evidence
from agentcycle.finetune import registry
from helpers import free_port

runner = CliRunner()

AGENT = """
def ask(question):
    n = int(question.split()[-1].rstrip("?"))
    return "I do not know" if BROKEN and n < 3 else f"It is {21 + n} days."
"""


@pytest.fixture(scope="module")
def store_home(tmp_path_factory):
    from agentcycle.observe.tracing import setup_tracking
    from agentcycle.settings import Settings

    home = tmp_path_factory.mktemp("registry-home")
    setup_tracking(Settings(home=home))  # creates the store's tables once
    return home


@pytest.fixture(autouse=True)
def shared_store(isolated_home, store_home, tmp_path, monkeypatch):
    """One MLflow store for the module (creating its tables takes seconds on 2 cores);
    each test registers its own model name. resolve_model_uri caches under the models
    dir: that is per test, out of the shared model cache."""
    monkeypatch.setenv("AGENTCYCLE_HOME", str(store_home))
    monkeypatch.setenv("AGENTCYCLE_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def settings(shared_store):
    from agentcycle.settings import Settings

    return Settings()


@pytest.fixture
def name(request):
    # Short: it must fit the 80-column table unfolded.
    return "m-" + hashlib.sha256(request.node.name.encode()).hexdigest()[:6]


@pytest.fixture
def tiny_model(tmp_path, base_model_dir):
    """The bundled model's config and tokenizer, without its 500 MB of weights."""
    folder = tmp_path / "tiny-model"
    folder.mkdir()
    for file in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(base_model_dir / file, folder / file)
    return folder


@pytest.fixture
def train_file(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    return path


def cli(*args):
    result = runner.invoke(app, [*map(str, args)])
    return result.exit_code, result.output


def eval_run(tmp_path, broken: bool) -> str:
    folder = tmp_path / ("broken" if broken else "good")
    folder.mkdir()
    (folder / "agent.py").write_text(f"BROKEN = {broken}\n" + AGENT)
    cases = "\n".join(f"  - {{id: c{i}, input: 'How long, case {i}?', "
                      f"keywords: ['{21 + i} days']}}" for i in range(6))
    (folder / "suite.yaml").write_text(
        f"name: toy\ncases:\n{cases}\nscorers: [keywords]\ntarget: python:agent.py:ask\n"
        "gates: ['accuracy>=0.9', 'errors<=0']\n")
    code, output = cli("eval", "run", folder / "suite.yaml", "--json")
    summary = json.loads(output[output.index("{"):])
    assert code == (1 if broken else 0), output
    return summary["run_id"]


def fake_finetune_run(settings, model_dir, train_file) -> str:
    """An MLflow run logged the way finetune() logs one (params, data, the model_dir tag)."""
    import mlflow

    from agentcycle.observe.tracing import setup_tracking

    setup_tracking(settings)
    with mlflow.start_run(run_name="finetune") as run:
        mlflow.log_params({"base_model": "/models/SmolLM2-135M-Instruct", "rank": 16,
                           "learning_rate": 0.001})
        mlflow.log_artifact(str(train_file), "data")
        mlflow.set_tag("agentcycle.model_dir", str(model_dir.resolve()))
    return run.info.run_id


def test_register_promote_resolve(tmp_path, settings, tiny_model, train_file, name):
    logged = tmp_path / "logged" / "train.jsonl"  # the run logs it as data/train.jsonl
    logged.parent.mkdir()
    shutil.copy2(train_file, logged)
    run_id = fake_finetune_run(settings, tiny_model, logged)
    good = eval_run(tmp_path, broken=False)

    code, output = cli("registry", "register", tiny_model, "--name", name,
                       "--eval-run", good, "--data", train_file)
    assert code == 0, output
    assert f"registered models:/{name}/1" in output and run_id in output

    [version] = registry.list_versions(name, settings)
    sha = hashlib.sha256(train_file.read_bytes()).hexdigest()
    assert version.run_id == run_id and version.aliases == []
    assert version.tags["agentcycle.data.sha256"] == sha
    assert version.tags["agentcycle.data.path"] == str(train_file.resolve())
    assert version.tags["agentcycle.base_model"] == "/models/SmolLM2-135M-Instruct"
    assert version.tags["agentcycle.method"] == "lora"
    assert json.loads(version.tags["agentcycle.params"])["rank"] == "16"
    assert version.tags["agentcycle.eval_run"] == good
    assert version.tags["metric.accuracy"] == "1"
    assert version.tags["agentcycle.data.artifact"] == f"runs:/{run_id}/data/train.jsonl"

    code, output = cli("registry", "promote", name, "1", "--eval-run", good)
    assert code == 0, output
    assert f"models:/{name}@champion -> version 1" in output and "accuracy>=0.9" in output

    local = registry.resolve_model_uri(f"models:/{name}@champion", settings)
    for file in ("config.json", "tokenizer.json"):
        assert (local / file).read_bytes() == (tiny_model / file).read_bytes()
    assert registry.resolve_model_uri(f"models:/{name}/1", settings) == local
    # A fixed version is read from the cache: no registry call (the store may be down).
    assert not list(local.parent.glob(".*")), "no temporary download folder left behind"
    inode = (local / "config.json").stat().st_ino
    assert registry.resolve_model_uri(f"models:/{name}@champion", settings) == local
    assert (local / "config.json").stat().st_ino == inode, "downloaded once"


def test_failed_gate_leaves_the_alias(tmp_path, settings, tiny_model, name):
    good, bad = eval_run(tmp_path, broken=False), eval_run(tmp_path, broken=True)
    v1 = registry.register_model(tiny_model, name, settings=settings)
    registry.promote(name, v1.version, eval_evidence(good, settings=settings)[2],
                     settings=settings)
    v2 = registry.register_model(tiny_model, name, settings=settings)
    assert v2.version == "2" and v2.source != v1.source

    code, output = cli("registry", "promote", name, "2", "--eval-run", bad)
    assert code == 1
    assert "gate failed: accuracy>=0.9 (got 0.5)" in output and "@champion is unchanged" in output
    assert "errors<=0" not in output.split("gate failed:")[1], "only the failed gate is named"
    assert "Traceback" not in output
    by_version = {v.version: v.aliases for v in registry.list_versions(name, settings)}
    assert by_version == {"1": ["champion"], "2": []}

    with pytest.raises(registry.PromotionRefused, match="no gates"):
        registry.promote(name, "2", [], settings=settings)


def test_registry_down_is_one_error(tmp_path, monkeypatch, tiny_model, name):
    from agentcycle.settings import Settings

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    import mlflow

    from agentcycle.observe.tracing import setup_tracking

    local = Settings()
    setup_tracking(local)
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ServiceError, match=f"MLflow at {dead}"):
        registry.register_model(tiny_model, name, settings=Settings(mlflow_tracking_uri=dead))
    setup_tracking(local)  # back to the store that works: MLflow must point there again
    assert mlflow.get_tracking_uri() == local.tracking_uri

    monkeypatch.setenv("MLFLOW_TRACKING_URI", dead)
    code, output = cli("registry", "register", tiny_model, "--name", name)
    assert code == 1 and output.count("error:") == 1 and dead in output, output
    assert "Traceback" not in output


def test_failed_upload_leaves_no_version_and_no_run(tmp_path, settings, tiny_model, name):
    from mlflow import MlflowClient

    (tiny_model / "broken-link").symlink_to(tmp_path / "missing")  # the copy fails on it
    with pytest.raises(ServiceError, match=f"registering {name}"):
        registry.register_model(tiny_model, name, settings=settings)
    client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
    assert name not in [m.name for m in client.search_registered_models()]
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, f"attributes.run_name = 'register-{name}'")
    assert runs == [], "the run holding half a model is deleted"


def test_bad_uris_and_unknown_models(settings, tiny_model, name):
    for bad in ("models:/", f"models:/{name}", f"models:/{name}@", "models:/a/b/c"):
        with pytest.raises(ConfigError, match="write models:/NAME@ALIAS"):
            registry.resolve_model_uri(bad, settings)
    with pytest.raises(ModelError):
        registry.resolve_model_uri("models:/nobody@champion", settings)
    registry.register_model(tiny_model, name, settings=settings)
    with pytest.raises(ModelError, match="champion"):
        registry.resolve_model_uri(f"models:/{name}@champion", settings)  # never promoted
    with pytest.raises(ModelError):
        registry.resolve_model_uri(f"models:/{name}/7", settings)
    from agentcycle.evals.gates import Gate, GateResult

    passed = [GateResult(Gate("accuracy", ">=", 0.5), 1.0, True)]
    with pytest.raises(ModelError, match="9"):
        registry.promote(name, "9", passed, settings=settings)
    with pytest.raises(ConfigError, match="bad model name"):
        registry.register_model(tiny_model, "no spaces", settings=settings)


def test_models_uri_where_a_model_is_given(tmp_path, settings, monkeypatch, tiny_model, name):
    from agentcycle.models import chat_model_dir
    from agentcycle.settings import Settings

    registry.register_model(tiny_model, name, settings=settings)
    monkeypatch.setenv("AGENTCYCLE_CHAT_MODEL", f"models:/{name}/1")
    resolved = chat_model_dir(Settings())
    assert (resolved / "config.json").read_bytes() == (tiny_model / "config.json").read_bytes()

    code, output = cli("serve", f"models:/{name}@champion", "--port", free_port())
    assert code == 1 and output.count("error:") == 1 and "champion" in output, output

    code, output = cli("registry", "list")
    assert code == 0 and name in output
    assert max(len(line) for line in output.splitlines()) <= 80
    code, output = cli("registry", "list", "nobody")
    assert code == 1 and output.count("error:") == 1 and "nobody" in output


@pytest.mark.slow
def test_a_registered_model_serves_by_its_alias(settings, base_model_dir, name):
    """The real bundled model, registered and promoted, served from models:/NAME@champion
    by the path the app, agents and router sessions take (local_backends)."""
    import httpx

    from agentcycle.evals.gates import Gate, GateResult
    from agentcycle.rag.session import local_backends

    version = registry.register_model(base_model_dir, name, settings=settings)
    registry.promote(name, version.version, [GateResult(Gate("accuracy", ">=", 0.5), 1.0, True)],
                     settings=settings)
    with local_backends(settings, f"models:/{name}@champion") as [backend]:
        reply = httpx.post(backend.api_base.rstrip("/") + "/chat/completions", timeout=60,
                           headers={"Authorization": f"Bearer {backend.api_key}"},
                           json={"model": backend.served_model, "max_tokens": 5,
                                 "messages": [{"role": "user", "content": "Say hi."}]})
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"]
