"""`agentcycle router ...` through its CLI runner, and the library's streaming API."""

import asyncio
import json

import pytest
import yaml
from typer.testing import CliRunner

from agentcycle.cli.main import app
from agentcycle.router import Backend, Router, StreamInterrupted
from helpers import BackgroundServer, dead_url, free_port, openai_fake_app

MESSAGES = [{"role": "user", "content": "How long to return a deposit?"}]
runner = CliRunner()

CONFIG = """\
backends:
  local: {model: openai/base, api_base: http://127.0.0.1:8000/v1, local: true}
  cloud: {model: gpt-4o-mini, api_key_env: TEST_CLOUD_KEY, context_window: 128000}
routes:
  default:
    backends: [local, cloud]
    policies: [{budget: {usd_per_day: 1}}]
  fast:
    backends: [local, cloud]
    policies: [least_latency]
"""


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "router.yaml"
    path.write_text(CONFIG)
    return path


def test_check_prints_the_routes_or_one_error_line(config_file, monkeypatch):
    monkeypatch.setenv("TEST_CLOUD_KEY", "x")
    ok = runner.invoke(app, ["router", "check", "--config", str(config_file)],
                       env={"COLUMNS": "150"})
    assert ok.exit_code == 0, ok.output
    assert "local -> cloud" in ok.output and "budget" in ok.output
    monkeypatch.delenv("TEST_CLOUD_KEY")
    bad = runner.invoke(app, ["router", "check", "--config", str(config_file)])
    assert bad.exit_code == 1
    assert "error:" in bad.output and "router.yaml:3: backends.cloud.api_key_env" in bad.output
    assert "Traceback" not in bad.output


def test_export_litellm_writes_a_litellm_proxy_config(config_file, tmp_path, monkeypatch):
    out = tmp_path / "litellm.yaml"
    result = runner.invoke(app, ["router", "export-litellm", "--config", str(config_file),
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "no LiteLLM equivalent for budget" in text
    exported = yaml.safe_load(text)
    models = {(m["model_name"], m["litellm_params"]["model"]) for m in exported["model_list"]}
    assert {("local", "openai/base"), ("cloud", "gpt-4o-mini"), ("default", "openai/base"),
            ("fast", "openai/base"), ("fast", "gpt-4o-mini")} <= models
    cloud = next(m for m in exported["model_list"] if m["model_name"] == "cloud")
    assert cloud["litellm_params"]["api_key"] == "os.environ/TEST_CLOUD_KEY"
    assert cloud["model_info"]["max_input_tokens"] == 128000
    settings = exported["router_settings"]
    assert settings["fallbacks"] == [{"default": ["cloud"]}]
    assert settings["routing_strategy"] == "latency-based-routing"
    # LiteLLM itself accepts it, keys resolved from the environment.
    from agentcycle.router._litellm import import_litellm

    monkeypatch.setenv("TEST_CLOUD_KEY", "sk-from-env")
    litellm_router = import_litellm().Router(model_list=exported["model_list"], **settings)
    assert set(litellm_router.get_model_names()) == {"local", "cloud", "default", "fast"}
    cloud_params = litellm_router.get_deployment_by_model_group_name("cloud").litellm_params
    assert cloud_params.api_key == "sk-from-env"


def test_stats_and_ab_report_read_the_log(isolated_home):
    with BackgroundServer(openai_fake_app()) as srv, dead_url() as dead:
        router = Router([Backend(name="down", model="openai/d", api_base=dead),
                         Backend(name="a", model="openai/a", api_base=srv.url + "/v1",
                                 input_usd_per_1k=1.0, output_usd_per_1k=1.0),
                         Backend(name="b", model="openai/b", api_base=srv.url + "/v1")],
                        routes={"ab": [{"ab": {"arms": {"a": 1, "b": 1}}}]}, tracing=False)
        results = [router.complete(MESSAGES, key=f"k{i}") for i in range(10)]
        for result in results:
            router.record_feedback(result.request_id, 1.0 if result.backend == "a" else 0.0)
        router.close()
    stats = runner.invoke(app, ["router", "stats", "--json"])
    assert stats.exit_code == 0, stats.output
    rows = {row["backend"]: row for row in json.loads(stats.output)}
    assert sum(r["requests"] for r in rows.values()) == 10
    assert rows["a"]["cost_usd"] == pytest.approx(rows["a"]["requests"] * 0.12)
    table = runner.invoke(app, ["router", "stats", "--since", "1h"], env={"COLUMNS": "80"})
    assert table.exit_code == 0 and "p95 ms" in table.output and "…" not in table.output
    report = runner.invoke(app, ["router", "ab-report", "--json"])
    arms = {row["arm"]: row for row in json.loads(report.output)}
    assert arms["a"]["quality_mean"] == 1.0 and arms["b"]["quality_mean"] == 0.0
    assert arms["a"]["n"] + arms["b"]["n"] == 10
    shown = runner.invoke(app, ["router", "ab-report"], env={"COLUMNS": "80"})
    assert shown.exit_code == 0 and "p qual" in shown.output and "…" not in shown.output
    assert runner.invoke(app, ["router", "stats", "--since", "yesterday"]).exit_code == 1


def test_stats_without_a_log_is_one_clear_line():
    result = runner.invoke(app, ["router", "stats"])
    assert result.exit_code == 1 and "no router log" in result.output


def test_astream_falls_back_before_the_first_chunk_and_accounts(isolated_home):
    async def main(router):
        stream = await router.astream(MESSAGES, max_tokens=20)
        assert stream.backend.name == "live" and "fallback after dead failed" in stream.reason
        chunks = [chunk async for chunk in stream]
        return stream, chunks

    with BackgroundServer(openai_fake_app(answer="one two three")) as srv, dead_url() as dead:
        for transport in ("litellm", "direct"):
            router = Router([Backend(name="dead", model="openai/d", api_base=dead,
                                     transport=transport),
                             Backend(name="live", model="openai/m", api_base=srv.url + "/v1",
                                     api_key="k", transport=transport)], tracing=False)
            stream, chunks = asyncio.run(main(router))
            assert "".join(stream.text_parts) == "one two three"
            assert stream.usage["completion_tokens"] == 20
            router.close()


def test_astream_broken_mid_way_raises_stream_interrupted():
    async def main(router):
        stream = await router.astream(MESSAGES)
        return await stream.text()

    with BackgroundServer(openai_fake_app(answer="a b c d e", cut_after=2)) as srv:
        router = Router([Backend(name="m", model="openai/m", api_base=srv.url + "/v1",
                                 api_key="k", transport="direct")], tracing=False,
                        log_path=False)
        with pytest.raises(StreamInterrupted, match="after 2 chunks"):
            asyncio.run(main(router))


def test_serve_runs_the_proxy_with_its_key(tmp_path, isolated_home):
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    import httpx

    from agentcycle.serving.server import free_port

    with BackgroundServer(openai_fake_app(answer="served")) as srv:
        config = tmp_path / "router.yaml"
        config.write_text(f"backends:\n  m: {{model: openai/m, api_base: {srv.url}/v1, "
                          "transport: direct}\nproxy_key_env: TEST_PROXY_KEY\ntracing: false\n")
        port = free_port()
        agentcycle = str(Path(sys.executable).parent / "agentcycle")
        proc = subprocess.Popen([agentcycle, "router", "serve", "--config", str(config),
                                 "--port", str(port)], env={**os.environ,
                                                            "TEST_PROXY_KEY": "sekret"})
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(url + "/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            body = {"model": "default", "messages": MESSAGES}
            assert httpx.post(url + "/v1/chat/completions", json=body).status_code == 401
            reply = httpx.post(url + "/v1/chat/completions", json=body,
                               headers={"authorization": "Bearer sekret"})
            assert reply.status_code == 200, reply.text
            assert reply.json()["choices"][0]["message"]["content"] == "served"
        finally:
            proc.terminate()
            proc.wait(timeout=15)
    assert (isolated_home / "router.db").exists()


def test_sync_stream_matches_astream_and_closes_early(isolated_home):
    from agentcycle.router.accounting import rows

    async def main(router):
        return await (await router.astream(MESSAGES)).text()

    with BackgroundServer(openai_fake_app(answer="w1 w2 w3 w4")) as srv:
        router = Router([Backend(name="m", model="openai/m", api_base=srv.url + "/v1",
                                 transport="direct")], tracing=False)
        chunks = list(router.stream(MESSAGES))
        text = "".join((c["choices"][0]["delta"].get("content") or "")
                       for c in chunks if c.get("choices"))
        assert text == asyncio.run(main(router)) == "w1 w2 w3 w4"
        for _ in router.stream(MESSAGES):
            break  # the caller stops reading after one chunk
        router.close()
    statuses = sorted(r.status for r in rows(isolated_home / "router.db"))
    assert statuses == ["cancelled", "ok", "ok"]


def test_serve_on_a_taken_port_is_one_error_line(config_file, monkeypatch):
    import socket

    monkeypatch.setenv("TEST_CLOUD_KEY", "x")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(app, ["router", "serve", "--config", str(config_file),
                                     "--port", str(port)])
    # Was uvicorn's own "ERROR: [Errno 98] ..." and exit 3, after the banner.
    assert result.exit_code == 1, result.output
    assert f"error: cannot serve on 127.0.0.1:{port}" in result.output
    assert "router proxy on" not in result.output and "Traceback" not in result.output


def test_export_litellm_to_an_unwritable_path_is_one_error_line(config_file, tmp_path):
    out = tmp_path / "missing-dir" / "litellm.yaml"
    result = runner.invoke(app, ["router", "export-litellm", "--config", str(config_file),
                                 "--out", str(out)])
    assert result.exit_code == 1 and f"error: cannot write {out}" in result.output
    assert "Traceback" not in result.output and not out.parent.exists()


def test_ab_report_shows_an_arm_whose_backend_is_down(isolated_home):
    """Requests of a dead arm fall back to the other backend; the report used to drop
    the arm altogether."""
    with BackgroundServer(openai_fake_app()) as srv, dead_url() as dead:
        router = Router([Backend(name="up", model="openai/u", api_base=srv.url + "/v1"),
                         Backend(name="down", model="openai/d", api_base=dead)],
                        routes={"ab": [{"ab": {"arms": {"up": 1, "down": 1}}}]},
                        tracing=False)
        results = [router.complete(MESSAGES, key=f"user-{i}") for i in range(12)]
        router.close()
    assert {r.backend for r in results} == {"up"}
    report = runner.invoke(app, ["router", "ab-report", "--json"])
    arms = {row["arm"]: row for row in json.loads(report.output)}
    assert set(arms) == {"up", "down"}
    assert arms["down"]["n"] == arms["down"]["errors"] > 0
    assert arms["down"]["p50_ms"] == 0 and arms["up"]["errors"] == 0
    assert arms["up"]["n"] + arms["down"]["n"] == 12


def test_a_log_that_is_not_a_database_is_one_error_line(isolated_home, tmp_path):
    isolated_home.mkdir(parents=True, exist_ok=True)
    (isolated_home / "router.db").write_text("not sqlite")
    for command in (["stats"], ["ab-report"]):
        result = runner.invoke(app, ["router", *command])
        assert result.exit_code == 1, result.output
        assert "error: cannot use the router log" in result.output
        assert "Traceback" not in result.output
    config = tmp_path / "router.yaml"
    config.write_text(f"db_path: {tmp_path}\nbackends:\n  a: {{model: openai/a, "
                      "api_base: 'http://127.0.0.1:9/v1'}\n")  # a directory, not a file
    served = runner.invoke(app, ["router", "serve", "--config", str(config),
                                 "--port", str(free_port())])
    assert served.exit_code == 1 and "error: cannot open the router log" in served.output


def test_export_litellm_without_routes_has_the_default_route(tmp_path):
    """The router serves `default` over all backends; the export had no such group."""
    config = tmp_path / "router.yaml"
    config.write_text("backends:\n  one: {model: openai/a, api_base: 'http://127.0.0.1:9/v1'}\n"
                      "  two: {model: openai/b, api_base: 'http://127.0.0.1:8/v1'}\n")
    result = runner.invoke(app, ["router", "export-litellm", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "&id" not in result.output  # no YAML anchors for LiteLLM users to puzzle over
    exported = yaml.safe_load(result.output)
    assert ("default", "openai/a") in {(m["model_name"], m["litellm_params"]["model"])
                                       for m in exported["model_list"]}
    assert exported["router_settings"]["fallbacks"] == [{"default": ["two"]}]
