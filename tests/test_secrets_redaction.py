"""Secrets never reach a store: plant API keys (the app's, a backend's, the LiteLLM
master key, the router proxy's, a wrong key a caller tried), drive the agent app, the
router (a backend failing first) and an eval run, then grep every file under the data
dir (MLflow's SQLite and artifacts, router.db, eval run folders, logs), the logs this
process wrote, and every HTTP answer for each of them."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from agentcycle.agents import ToolAgent
from agentcycle.app import AppPolicy, create_app
from agentcycle.router import Router
from agentcycle.router.backends import cloud_backend, local_backend
from agentcycle.router.proxy import create_proxy_app
from agentcycle.serving.server import free_port
from agentcycle.settings import Settings
from helpers import BackgroundServer, chat_app, cli_run, fake_cloud_app, lookup_then_answer

APP_KEY = "sk-planted-app-3f9a7c1e"
WRONG_KEY = "sk-planted-wrong-77aa0b"
BACKEND_KEY = "sk-planted-backend-5b2e"
DOWN_KEY = "sk-planted-down-9d1c44"
MASTER_KEY = "sk-planted-master-8c4d"
PROXY_KEY = "sk-planted-proxy-2a6f"
SECRETS = [APP_KEY, WRONG_KEY, BACKEND_KEY, DOWN_KEY, MASTER_KEY, PROXY_KEY]


def leaks(text: str | bytes) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    return [s for s in SECRETS if s.encode() in data]


def lookup(term: str) -> str:
    """Look a term up."""
    return f"{term}: 21 days"


def test_planted_secrets_reach_no_store_log_or_answer(isolated_home, monkeypatch, caplog,
                                                     tmp_path):
    caplog.set_level(logging.DEBUG)
    answers: list[httpx.Response] = []
    model, cloud = chat_app(lookup_then_answer), fake_cloud_app(fail_with=500)
    with BackgroundServer(model) as model_server, BackgroundServer(cloud) as cloud_server:
        monkeypatch.setenv("LITELLM_ENDPOINT", f"{cloud_server.url}/v1")
        monkeypatch.setenv("LITELLM_MASTER_KEY", MASTER_KEY)
        monkeypatch.setenv("AGENTCYCLE_CLOUD_MODEL", "gpt-4o-mini")
        settings = Settings()
        down = local_backend("down", f"http://127.0.0.1:{free_port()}/v1", "m", DOWN_KEY)
        up = local_backend("fake", f"{model_server.url}/v1", "fake", BACKEND_KEY)
        router = Router([down, up, cloud_backend(settings)], cooldown_s=0.01)
        agent = ToolAgent(router, [lookup], settings=settings, max_tokens=32)
        app = create_app(agent, ui=False, policy=AppPolicy(api_keys={"alice": APP_KEY}))
        proxy = create_proxy_app(router, PROXY_KEY)
        with BackgroundServer(app) as app_server, BackgroundServer(proxy) as proxy_server, \
                httpx.Client(timeout=30) as http:
            good = {"Authorization": f"Bearer {APP_KEY}"}
            asked = http.post(f"{app_server.url}/v1/ask", json={"question": "Deposit?"},
                              headers=good)
            assert asked.status_code == 200, asked.text
            answers += [asked, http.post(f"{app_server.url}/v1/feedback", headers=good, json={
                "trace_id": asked.json()["trace_id"], "score": 1})]
            for headers in ({"Authorization": f"Bearer {WRONG_KEY}"}, {"X-API-Key": WRONG_KEY}):
                answers.append(http.post(f"{app_server.url}/v1/ask", headers=headers,
                                         json={"question": "q"}))
            answers.append(http.get(f"{app_server.url}/v1/stats", headers=good))
            # the down backend alone: its error names it, not its key
            answers.append(http.post(f"{proxy_server.url}/v1/chat/completions", json={
                "model": "down", "messages": [{"role": "user", "content": "hi"}]},
                headers={"Authorization": f"Bearer {PROXY_KEY}"}))
            answers.append(http.post(f"{proxy_server.url}/v1/chat/completions", json={
                "model": "fake", "messages": [{"role": "user", "content": "hi"}]},
                headers={"Authorization": f"Bearer {WRONG_KEY}"}))
            suite = tmp_path / "suite.yaml"
            suite.write_text("name: secrets\ncases: [{id: c1, input: 'Deposit?', keywords: "
                             "[days]}]\nscorers: [keywords]\n")
            code, output = cli_run("eval", "run", str(suite), "--target",
                                   f"app:{app_server.url}?key={APP_KEY}")
            assert code == 0, output
            code2, output2 = cli_run("eval", "run", str(suite), "--target",
                                     f"openai:{proxy_server.url}/v1#fake?key={PROXY_KEY}")
            assert code2 == 0, output2
        router.close()
    statuses = [r.status_code for r in answers]
    assert statuses[:5] == [200, 200, 401, 401, 200] and statuses[5] >= 500 \
        and statuses[6] == 401, [(r.status_code, r.text[:200]) for r in answers]
    import mlflow

    mlflow.flush_trace_async_logging()
    found = {}
    for response in answers:
        found.update({f"answer {response.url}": leaks(response.text)} if
                     leaks(response.text) else {})
    for output_text in (output, output2):
        if leaks(output_text):
            found["CLI output"] = leaks(output_text)
    for record in caplog.records:
        if leaks(record.getMessage()):
            found[f"log {record.name}"] = leaks(record.getMessage())
    stores = [p for p in Path(isolated_home).rglob("*") if p.is_file()]
    assert any(p.name == "mlflow.db" for p in stores)
    assert any(p.name == "router.db" for p in stores)
    assert any(p.name == "run.json" for p in stores), stores
    for path in stores:
        if leaks(path.read_bytes()):
            found[str(path.relative_to(isolated_home))] = leaks(path.read_bytes())
    assert not found, found


@pytest.fixture(autouse=True)
def _no_stray_key(monkeypatch):
    for name in ("AGENTCYCLE_API_KEYS", "AGENTCYCLE_API_KEYS_FILE", "OPENAI_API_KEY",
                 "AGENTCYCLE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
