"""The agent app's front door, on the real app: keys with names, per-key rate limits and
token budgets, body and request bounds (chunked bodies too), a bounded run queue,
CORS, feedback onto the trace that `data from-traces` reads. A real tool agent answers
through a fake OpenAI-protocol model on 127.0.0.1."""

from __future__ import annotations

import concurrent.futures
import os
import re
import time

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from agentcycle.agents import ToolAgent
from agentcycle.app import AppPolicy, create_app
from agentcycle.errors import ConfigError
from agentcycle.router import Router
from agentcycle.router.backends import local_backend
from helpers import (
    BackgroundServer,
    assert_clean_error,
    chat_app,
    cli_run,
    lookup_then_answer,
)

KEYS = {"alice": "alice-key-0001", "ci": "ci-key-000002"}
ALICE = {"Authorization": f"Bearer {KEYS['alice']}"}
CI = {"X-API-Key": KEYS["ci"]}


def lookup(term: str) -> str:
    """Look a term up."""
    time.sleep(0.3)  # a slow tool: runs overlap
    return f"{term}: 21 days"


@pytest.fixture(scope="module")
def model_url():
    with BackgroundServer(chat_app(lookup_then_answer, usage=(100, 20))) as server:
        yield f"{server.url}/v1"


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory):
    """One MLflow store for the module: creating one costs seconds."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def agent(model_url, mlflow_uri, monkeypatch):
    from agentcycle.settings import Settings

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    settings = Settings()
    router = Router([local_backend("fake", model_url, "fake", "backend-key-xyz")])
    yield ToolAgent(router, [lookup], settings=settings, max_tokens=32)
    router.close()


def client_for(agent, **policy) -> TestClient:
    return TestClient(create_app(agent, ui=False, policy=AppPolicy(api_keys=KEYS, **policy)))


def assert_refusal(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code and body["error"]["message"] == body["detail"]
    if status in (429, 503):
        assert int(response.headers["retry-after"]) >= 1
    return body


def test_keys_admit_by_name_and_the_trace_and_stats_name_the_caller(agent):
    import mlflow

    client = client_for(agent)
    refused = client.post("/v1/ask", json={"question": "Deposit?"})
    assert_refusal(refused, 401, "invalid_api_key")
    assert refused.headers["www-authenticate"] == "Bearer"
    wrong = client.post("/v1/ask", json={"question": "Deposit?"},
                        headers={"Authorization": "Bearer alice-key-0002"})
    assert_refusal(wrong, 401, "invalid_api_key")
    assert "alice-key-0002" not in wrong.text
    assert client.get("/health").status_code == 200 and client.get("/ready").status_code == 200
    answer = client.post("/v1/ask", json={"question": "Deposit?"}, headers=ALICE)
    assert answer.status_code == 200 and "21 days" in answer.json()["answer"]
    assert client.post("/v1/ask", json={"question": "Deposit?"}, headers=CI).status_code == 200
    trace = mlflow.get_trace(answer.json()["trace_id"], flush=True)
    assert trace.info.tags["agentcycle.api_key"] == "alice"
    assert {s.name for s in trace.data.spans} >= {"agent app", "tool agent"}
    stats = client.get("/v1/stats", headers=CI).json()
    assert stats["keys"]["alice"] == {"requests": 1, "refused": {}, "tokens_today": 240}
    assert stats["keys"]["no key"]["refused"] == {"401": 1}
    assert stats["keys"]["unknown key"]["refused"] == {"401": 1}
    assert client.get("/v1/stats").status_code == 401


def test_rate_limits_and_token_budgets_are_per_key(agent):
    client = client_for(agent, requests_per_minute=2)
    for _ in range(2):
        assert client.get("/v1/stats", headers=ALICE).status_code == 200
    body = assert_refusal(client.get("/v1/stats", headers=ALICE), 429, "rate_limit_exceeded")
    assert "'alice'" in body["error"]["message"] and "2 requests per minute" in body["detail"]
    assert client.get("/v1/stats", headers=CI).status_code == 200  # ci has its own bucket

    # two model calls of 120 tokens each per question: 240; a budget of 300 admits two
    client = client_for(agent, tokens_per_day=300)
    for expected in (200, 200):
        assert client.post("/v1/ask", json={"question": "q"}, headers=ALICE).status_code \
            == expected
    spent = client.post("/v1/ask", json={"question": "q"}, headers=ALICE)
    assert_refusal(spent, 429, "insufficient_quota")
    assert 0 < int(spent.headers["retry-after"]) <= 86400
    assert client.post("/v1/ask", json={"question": "q"}, headers=CI).status_code == 200


def test_bounds_on_bodies_questions_and_max_tokens(agent):
    client = client_for(agent, max_body_bytes=1000, max_question_chars=50, max_tokens=64)
    big = client.post("/v1/ask", content=b'{"question": "' + b"x" * 5000 + b'"}',
                      headers={**ALICE, "content-type": "application/json"})
    assert_refusal(big, 413, "request_too_large")
    long = client.post("/v1/ask", json={"question": "x" * 51}, headers=ALICE)
    assert long.status_code == 422 and long.json()["detail"][0]["type"] == "string_too_long"
    tokens = client.post("/v1/ask", json={"question": "q", "max_tokens": 65}, headers=ALICE)
    assert tokens.status_code == 422 and tokens.json()["detail"][0]["loc"][-1] == "max_tokens"
    assert client.post("/v1/ask", json={"question": "q", "max_tokens": 64},
                       headers=ALICE).status_code == 200
    # no key: refused before the body is looked at
    assert client.post("/v1/ask", content=b"x" * 5000).status_code == 401


def test_a_chunked_body_is_cut_off_at_the_bound_on_a_real_server(agent):
    app = create_app(agent, ui=False, policy=AppPolicy(api_keys=KEYS, max_body_bytes=2000))
    sent = []

    def chunks():
        for _ in range(1000):  # 1 MB if nobody stopped reading
            sent.append(1)
            yield b"x" * 1024

    with BackgroundServer(app) as server, httpx.Client(timeout=10) as http:
        try:
            response = http.post(f"{server.url}/v1/ask", content=chunks(),
                                 headers={**ALICE, "content-type": "application/json"})
        except httpx.HTTPError:  # the server may answer and close before the upload ends
            pytest.fail("the 413 did not come back as a response")
        assert_refusal(response, 413, "request_too_large")
        assert response.request.headers["transfer-encoding"] == "chunked"
        assert http.get(f"{server.url}/health").status_code == 200


def test_over_capacity_requests_queue_or_get_a_clean_503_never_hang(agent):
    app = create_app(agent, ui=False, policy=AppPolicy(api_keys=KEYS, max_concurrency=1,
                                                       max_queue=1, requests_per_minute=100))
    with BackgroundServer(app) as server, httpx.Client(timeout=30) as http:
        def ask(_: int) -> httpx.Response:
            return http.post(f"{server.url}/v1/ask", json={"question": "q"}, headers=ALICE)

        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(5) as pool:
            responses = list(pool.map(ask, range(5)))
        elapsed = time.monotonic() - started
        stats = http.get(f"{server.url}/v1/stats", headers=ALICE).json()
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {200, 503} and statuses.count(200) >= 2, statuses
    for refused in (r for r in responses if r.status_code == 503):
        assert_refusal(refused, 503, "server_overloaded")
    assert elapsed < 20, elapsed
    assert stats["keys"]["alice"]["requests"] == statuses.count(200)
    assert stats["keys"]["alice"]["refused"].get("503", 0) == statuses.count(503)
    assert stats["running"] == 0 and stats["waiting"] == 0


def test_a_queued_request_waits_at_most_the_queue_timeout(agent):
    app = create_app(agent, ui=False, policy=AppPolicy(max_concurrency=1, max_queue=5,
                                                       queue_timeout_s=0.2))
    with BackgroundServer(app) as server, httpx.Client(timeout=30) as http:
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            responses = list(pool.map(lambda _: http.post(
                f"{server.url}/v1/ask", json={"question": "q"}), range(3)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses[0] == 200 and 503 in statuses, statuses
    assert "within 0.2 s" in next(r for r in responses if r.status_code == 503).json()["detail"]


def test_cors_is_off_by_default_and_on_for_named_origins(agent):
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization"}
    off = client_for(agent)
    assert "access-control-allow-origin" not in off.options("/v1/ask", headers=preflight).headers
    assert "access-control-allow-origin" not in off.get("/health", headers=preflight).headers
    on = client_for(agent, cors_origins=["https://app.example"])
    answer = on.options("/v1/ask", headers=preflight)
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == "https://app.example"
    other = on.options("/v1/ask", headers={**preflight, "Origin": "https://evil.example"})
    assert other.status_code == 400


def test_feedback_lands_on_the_trace_that_data_from_traces_reads(agent):
    from agentcycle.finetune.dataprep import from_mlflow

    client = client_for(agent)
    good = client.post("/v1/ask", json={"question": "Deposit?"}, headers=ALICE).json()
    bad = client.post("/v1/ask", json={"question": "Rent?"}, headers=CI).json()
    for trace_id, score in ((good["trace_id"], 1.0), (bad["trace_id"], 0.0)):
        receipt = client.post("/v1/feedback", headers=CI,
                              json={"trace_id": trace_id, "score": score, "comment": "ok"})
        assert receipt.status_code == 200, receipt.text
        assert receipt.json() == {"trace_id": trace_id, "score": score, "mlflow": "recorded",
                                  "langfuse": "off"}
    import mlflow

    feedback = mlflow.get_trace(good["trace_id"]).info.assessments[0]
    assert (feedback.name, feedback.source.source_id) == ("user_feedback", "ci")
    # what `agentcycle data from-traces --min-score 0.5` keeps: the good answer only.
    # (The tool agent's calls carry tool messages, which that builder leaves out: so
    # read the scored calls it sees before that filter.)
    from agentcycle.finetune.dataprep.traces import mlflow_calls

    scores = {c.trace_id: c.score for c in mlflow_calls(agent.settings)}
    assert scores[good["trace_id"]] == 1.0 and scores[bad["trace_id"]] == 0.0
    assert from_mlflow(agent.settings, min_score=0.5).skipped["score below 0.5"] >= 1

    missing = client.post("/v1/feedback", headers=CI, json={"trace_id": "tr-0123", "score": 1})
    assert missing.status_code == 404 and "no trace 'tr-0123'" in missing.json()["detail"]
    for body in ({"trace_id": good["trace_id"], "score": 2},
                 {"trace_id": "a b", "score": 1}, {"score": 1}):
        assert client.post("/v1/feedback", headers=CI, json=body).status_code == 422
    assert client.post("/v1/feedback", json={"trace_id": "x", "score": 1}).status_code == 401


def test_feedback_is_sent_to_langfuse_as_a_score(agent, monkeypatch):
    recorder = FastAPI()
    recorder.state.scores = []

    @recorder.post("/api/public/scores")
    async def scores(request: Request):
        recorder.state.scores.append((request.headers.get("authorization"),
                                      await request.json()))
        return {"id": "s1"}

    @recorder.post("/api/public/otel/v1/traces")
    async def spans(request: Request):
        return {}

    client = client_for(agent)
    trace_id = client.post("/v1/ask", json={"question": "q"}, headers=ALICE).json()["trace_id"]
    from agentcycle.observe.tracing import langfuse_otlp_env, setup_tracking
    from agentcycle.settings import Settings

    langfuse = {"LANGFUSE_PUBLIC_KEY": "pk-lf-1", "LANGFUSE_SECRET_KEY": "sk-lf-1"}
    otel = list(langfuse_otlp_env(Settings(langfuse_host="http://x", **{
        "langfuse_public_key": "p", "langfuse_secret_key": "s"})))
    for name in otel:  # absent before: absent after (setup_tracking sets them)
        monkeypatch.delenv(name, raising=False)
    with BackgroundServer(recorder) as server:
        try:
            for name, value in {**langfuse, "LANGFUSE_HOST": server.url}.items():
                monkeypatch.setenv(name, value)
            agent.settings = Settings()
            receipt = client.post("/v1/feedback", headers=ALICE,
                                  json={"trace_id": trace_id, "score": 0.5}).json()
        finally:  # later spans must not be exported to the recorder once it is gone
            for name in [*langfuse, "LANGFUSE_HOST", *otel]:
                os.environ.pop(name, None)
            setup_tracking(Settings())
    assert receipt["langfuse"] == "recorded", receipt
    auth, body = recorder.state.scores[0]
    assert auth.startswith("Basic ")
    assert body["traceId"] == trace_id.removeprefix("tr-") and len(body["traceId"]) == 32
    assert (body["name"], body["value"], body["dataType"]) == ("user_feedback", 0.5, "NUMERIC")


def test_policy_from_settings_and_its_bad_input(settings, tmp_path, monkeypatch):
    from agentcycle.settings import Settings

    keys = tmp_path / "keys.txt"
    keys.write_text("# team keys\nbob=bob-key-00003\n\n")
    monkeypatch.setenv("AGENTCYCLE_API_KEYS", "alice=alice-key-0001, ci=ci-key-000002")
    monkeypatch.setenv("AGENTCYCLE_API_KEYS_FILE", str(keys))
    monkeypatch.setenv("AGENTCYCLE_APP_REQUESTS_PER_MINUTE", "7")
    monkeypatch.setenv("AGENTCYCLE_CORS_ORIGINS", "https://a.example, https://b.example")
    policy = AppPolicy.from_settings(Settings())
    assert policy.api_keys == {**KEYS, "bob": "bob-key-00003"}
    assert policy.requests_per_minute == 7 and policy.identify("bob-key-00003") == "bob"
    assert policy.cors_origins == ["https://a.example", "https://b.example"]
    assert "alice-key-0001" not in repr(Settings())
    for value, fragment in (("alice=", "empty"), ("a=k1k1k1k1k1,a=k2k2k2k2k2", "twice"),
                            ("alice=short", "shorter than 8"), ("bad name=longenough1",
                                                                "must be 1-64"),
                            ("garbage", "'key1' is shorter than 8 characters (a key given "
                                        "without name= is named by its place)"),
                            ('{"alice": "a-long-key-1"}', "spaces, quotes or brackets")):
        monkeypatch.setenv("AGENTCYCLE_API_KEYS", value)
        with pytest.raises(ConfigError, match=re.escape(fragment)) as error:
            AppPolicy.from_settings(Settings())
        assert "short" not in str(error.value).replace("shorter", "")
    monkeypatch.setenv("AGENTCYCLE_API_KEYS_FILE", str(tmp_path / "none.txt"))
    with pytest.raises(ConfigError, match="cannot read the API keys file"):
        AppPolicy.from_settings(Settings(api_keys=None))


def test_the_cli_refuses_a_public_address_without_keys(monkeypatch):
    code, output = cli_run("app", "--host", "0.0.0.0", "--port", "1")
    assert_clean_error(code, output, "without API keys", "--insecure")


def test_the_ui_asks_for_a_key_when_keys_are_set(agent):
    client = TestClient(create_app(agent, policy=AppPolicy(api_keys=KEYS)))
    assert client.get("/ui/config").status_code == 401
    assert client.post("/ui/login", data={"username": "alice",
                                          "password": "wrong-key-000"}).status_code == 400
    login = client.post("/ui/login", data={"username": "alice", "password": KEYS["alice"]})
    assert login.status_code == 200, login.text
    assert client.get("/ui/config").status_code == 200


def test_a_failed_model_call_is_a_503_with_retry_after():
    from agentcycle.agents import BaseAgent
    from agentcycle.errors import ServiceError

    class Down(BaseAgent):
        def run(self, task, **options):
            raise ServiceError("every model backend failed (local: TimeoutError)")

    response = client_for(Down()).post("/v1/ask", json={"question": "q"}, headers=ALICE)
    assert response.status_code == 503 and response.headers["retry-after"] == "10"
    assert "every model backend failed" in response.json()["detail"]
