from pathlib import Path

from agentcycle.discovery import discover
from agentcycle.settings import Settings


def test_embedded_defaults(isolated_home):
    settings = Settings()
    assert settings.home == isolated_home
    assert settings.qdrant_url is None
    assert settings.tracking_uri == f"sqlite:///{isolated_home.resolve() / 'mlflow.db'}"
    assert not settings.langfuse_enabled
    assert settings.qdrant_path == (isolated_home / "qdrant").resolve()


def test_default_home_is_dot_agentcycle(monkeypatch):
    monkeypatch.delenv("AGENTCYCLE_HOME")
    assert Settings().home == Path(".agentcycle")


def test_platform_variables_switch_to_real_services(monkeypatch):
    monkeypatch.setenv("LITELLM_URL", "http://litellm:4000")
    monkeypatch.setenv("QDRANT_HOST", "qdrant.svc")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv("LANGFUSE_HOST", "http://langfuse:3000")
    monkeypatch.setenv("LANGFUSE_PUBLIC_KEY", "pk")
    monkeypatch.setenv("LANGFUSE_SECRET_KEY", "sk")
    settings = Settings()
    assert settings.litellm_endpoint == "http://litellm:4000"
    assert settings.qdrant_url == "http://qdrant.svc:6333"
    assert settings.tracking_uri == "http://mlflow:5000"
    assert settings.langfuse_enabled


def test_settings_read_the_environment_when_built_not_at_import(monkeypatch):
    first = Settings()
    monkeypatch.setenv("QDRANT_URL", "http://q:6333")
    assert first.qdrant_url is None and Settings().qdrant_url == "http://q:6333"


def test_discovery_reports_embedded_and_real_services(monkeypatch):
    from fastapi import FastAPI

    from helpers import BackgroundServer

    app = FastAPI()

    @app.get("/healthz")
    def healthz():
        return "ok"

    with BackgroundServer(app) as qdrant, __import__("helpers").dead_url() as dead:
        monkeypatch.setenv("QDRANT_URL", qdrant.url)
        monkeypatch.setenv("LITELLM_ENDPOINT", dead.removesuffix("/v1"))
        rows = {r.service: r for r in discover(Settings())}
    assert rows["qdrant"].mode == "real" and rows["qdrant"].reachable is True
    assert rows["litellm"].mode == "real" and rows["litellm"].reachable is False
    assert rows["mlflow"].mode == "embedded" and rows["mlflow"].location.startswith("sqlite:")
    assert rows["langfuse"].mode == "off"


def test_settings_given_in_code_are_not_ignored(monkeypatch, tmp_path):
    from agentcycle.settings import Settings

    monkeypatch.setenv("AGENTCYCLE_HOME", str(tmp_path / "env"))
    assert Settings().home == tmp_path / "env"
    assert Settings(home=tmp_path / "code").home == tmp_path / "code"
    assert Settings(nats_url="nats://x:1").nats_url == "nats://x:1"


def test_doctor_shows_where_workflow_checkpoints_live(monkeypatch):
    from agentcycle.serving.server import free_port

    [row] = [r for r in discover(Settings()) if r.service == "postgresql"]
    assert (row.mode, row.reachable) == ("embedded", None)
    assert row.location.endswith("workflows.db")
    port = free_port()  # nothing listens there
    monkeypatch.setenv("POSTGRES_HOST", "127.0.0.1")
    monkeypatch.setenv("POSTGRES_PORT", str(port))
    monkeypatch.setenv("POSTGRES_PASSWORD", "s3cret")
    [row] = [r for r in discover(Settings()) if r.service == "postgresql"]
    assert row.mode == "real" and row.reachable is False
    assert row.location == f"postgresql://127.0.0.1:{port}/agentcycle"  # no password shown
    assert "s3cret" not in str(row.as_dict())
