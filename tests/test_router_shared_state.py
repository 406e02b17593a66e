"""Router state shared by proxy replicas through a real redis-server on 127.0.0.1.

Two real `agentcycle router serve` processes (each with its own data dir and log), one
fake OpenAI-protocol backend answering with known usage: one daily budget, cooldowns seen
by both, one sticky A/B arm even when their configs' weights differ, one rate limit, and
no increment lost under concurrency. Redis lost mid-run: requests keep succeeding (fail
open), one warning line, no traceback; Redis unreachable at start-up: one error line.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from agentcycle.serving.server import free_port
from helpers import BackgroundServer, assert_clean_error, cli_run, openai_fake_app
from redis_server import REDIS_SERVER, RedisServer

pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed "
                                "(Debian: apt-get install redis-server)")
AGENTCYCLE = str(Path(sys.executable).parent / "agentcycle")
MESSAGES = [{"role": "user", "content": "Deposit cap?"}]


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer().start()
    yield server
    server.stop()


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("REDIS_", "CACHE_URL", "VALKEY_", "QDRANT", "LITELLM", "NATS"))}
    return {**env, "AGENTCYCLE_HOME": str(home), **extra}


class Replica:
    """`agentcycle router serve` in its own process."""

    def __init__(self, config: Path, env: dict[str, str]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [AGENTCYCLE, "router", "serve", "--config", str(config), "--port", str(self.port)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait(self) -> Replica:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"replica exited: {self.proc.stderr.read()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError("replica did not start")

    def chat(self, route: str, **body) -> httpx.Response:
        return httpx.post(self.url + "/v1/chat/completions", timeout=30,
                          json={"model": route, "messages": MESSAGES, **body})

    def stop(self) -> str:
        """Stop it; its stderr."""
        self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err


def _config(path: Path, fake: str, flaky: str, weights: tuple[float, float]) -> Path:
    direct = f"api_base: {fake}/v1, transport: direct"
    path.write_text(f"""\
cooldown_s: 300
tracing: false
backends:
  cloud: {{model: openai/cloud, {direct}, input_usd_per_1k: 1.0, output_usd_per_1k: 0.0}}
  local: {{model: openai/local, {direct}, local: true}}
  flaky: {{model: openai/flaky, api_base: {flaky}/v1, transport: direct}}
  arm_a: {{model: openai/arm-a, {direct}, local: true}}
  arm_b: {{model: openai/arm-b, {direct}, local: true}}
routes:
  budget: {{backends: [cloud, local], policies: [{{budget: {{usd_per_day: 5.0}}}}]}}
  cool: {{backends: [flaky, local]}}
  ab:
    backends: [arm_a, arm_b]
    policies: [{{ab: {{arms: {{arm_a: {weights[0]}, arm_b: {weights[1]}}}}}}}]
  limited: {{backends: [local], policies: [{{rate_limit: {{requests_per_minute: 5}}}}]}}
  priced: {{backends: [cloud]}}
""")
    return path


@pytest.fixture(scope="module")
def replicas(redis_server, tmp_path_factory):
    """Two proxy replicas sharing one Redis namespace; usage 1000 prompt tokens at
    $1/1K: every `cloud` call costs exactly $1. Their configs differ only in the A/B
    weights (a rollout half done)."""
    tmp = tmp_path_factory.mktemp("replicas")
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    with BackgroundServer(openai_fake_app(usage=(1000, 0))) as fake, \
            BackgroundServer(openai_fake_app()) as flaky:
        started = []
        for name, weights in (("a", (1.0, 0.0001)), ("b", (0.0001, 1.0))):
            config = _config(tmp / f"router-{name}.yaml", fake.url, flaky.url, weights)
            env = _env(tmp / f"home-{name}", REDIS_URL=redis_server.url,
                       AGENTCYCLE_ROUTER_NAMESPACE=namespace)
            started.append(Replica(config, env))
        try:
            a, b = (r.wait() for r in started)
            yield {"a": a, "b": b, "fake": fake, "flaky": flaky, "namespace": namespace}
        finally:
            errors = [r.stop() for r in started]
    for err in errors:
        assert "Traceback" not in err, err


def _models(server: BackgroundServer) -> list[str]:
    return [body["model"] for body in server.server.config.app.state.requests]


def test_requests_over_both_replicas_stop_at_one_daily_budget(replicas):
    a, b = replicas["a"], replicas["b"]
    served = []
    for i in range(12):
        reply = (a if i % 2 == 0 else b).chat("budget")
        assert reply.status_code == 200, reply.text
        served.append(reply.headers["x-agentcycle-backend"])
    # $1 a call, $5 a day: five cloud calls in all, not five per replica.
    assert served == ["cloud"] * 5 + ["local"] * 7
    assert _models(replicas["fake"]).count("cloud") == 5


def test_a_cooldown_set_by_one_replica_is_seen_by_the_other(replicas):
    a, b, flaky = replicas["a"], replicas["b"], replicas["flaky"]
    flaky.server.config.app.state.fail_with = 500
    first = a.chat("cool")
    assert first.status_code == 200 and first.headers["x-agentcycle-backend"] == "local"
    assert len(flaky.server.config.app.state.requests) == 1
    flaky.server.config.app.state.fail_with = None  # healthy again, but cooling for 300 s
    second = b.chat("cool")
    assert second.status_code == 200 and second.headers["x-agentcycle-backend"] == "local"
    assert len(flaky.server.config.app.state.requests) == 1  # b skipped it: never called
    health = httpx.get(b.url + "/health").json()
    assert health["cooling"] == ["flaky"]
    assert health["state"].startswith("redis redis://127.0.0.1:")


def test_a_sticky_ab_assignment_is_the_same_from_both_replicas(replicas):
    a, b = replicas["a"], replicas["b"]
    # a's weights put nearly every key on arm_a, b's on arm_b: the first assignment wins.
    for user in ("alice", "bob", "carol"):
        first = a.chat("ab", user=user).headers["x-agentcycle-backend"]
        again = [r.chat("ab", user=user).headers["x-agentcycle-backend"] for r in (b, a, b)]
        assert first == "arm_a" and again == [first] * 3
    first = b.chat("ab", user="dave").headers["x-agentcycle-backend"]
    assert first == "arm_b" and a.chat("ab", user="dave").headers[
        "x-agentcycle-backend"] == "arm_b"


def test_one_rate_limit_over_both_replicas(replicas):
    a, b = replicas["a"], replicas["b"]
    if time.time() % 60 > 50:  # the window is a calendar minute: not across its end
        time.sleep(61 - time.time() % 60)
    statuses, refused = [], None
    for i in range(8):
        reply = (a if i % 2 == 0 else b).chat("limited", user="erin")
        statuses.append(reply.status_code)
        if reply.status_code == 429:
            refused = reply
    assert statuses == [200] * 5 + [429] * 3
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert a.chat("limited", user="frank").status_code == 200  # another key, its own count


def test_concurrent_requests_lose_no_spend(replicas, redis_server):
    import redis

    from agentcycle.router.state import utc_day

    async def main() -> list[int]:
        async with httpx.AsyncClient(timeout=30) as client:
            replies = await asyncio.gather(*[
                client.post((replicas["a"] if i % 2 else replicas["b"]).url
                            + "/v1/chat/completions",  # every fourth one streamed
                            json={"model": "priced", "messages": MESSAGES,
                                  "stream": i % 4 == 0})
                for i in range(40)])
        return [r.status_code for r in replies]

    assert asyncio.run(main()) == [200] * 40
    key = f"agentcycle:router:{replicas['namespace']}:spend:priced:{utc_day()}"
    assert float(redis.Redis(port=redis_server.port).get(key)) == pytest.approx(40.0)


def test_concurrent_updates_from_two_states_are_atomic(redis_server):
    """Two replicas' states (two connection pools) hammering the same keys."""
    from agentcycle.router.shared_state import RedisState

    namespace = uuid.uuid4().hex[:8]
    states = [RedisState(redis_server.url, namespace=namespace) for _ in range(2)]

    async def main():
        spends = [s.aadd_spend("r", 0.25) for s in states for _ in range(250)]
        counts = [s.acount("r:k", 60.0) for s in states for _ in range(250)]
        arms = [s.asticky_arm("r", "user-1", arm, ["x", "y"])
                for s, arm in zip(states * 50, ["x", "y"] * 50, strict=True)]
        results = await asyncio.gather(*spends, *counts, *arms)
        totals = [await s.aspent_today("r") for s in states]
        for s in states:
            await s.aclose()
        return results[500:1000], results[1000:], totals

    counted, arms, totals = asyncio.run(main())
    assert not any("unreachable" in s.describe() for s in states)  # no fallback taken
    assert totals == [125.0, 125.0]
    window_counts = sorted(c for c, _ in counted)
    if window_counts != list(range(1, 501)):  # the minute turned mid-run: two windows
        assert len(window_counts) == 500 and len(set(window_counts)) < 500
    assert len(set(arms)) == 1  # one arm for the key, whichever state set it first


def test_a_hung_redis_stalls_a_burst_about_one_socket_timeout_not_one_per_queued_call():
    """A Redis that accepts connections and never answers: the first calls wait out the
    1 s socket timeout; the calls queued behind them fall back at once."""
    import socket
    import threading

    from agentcycle.router.shared_state import RedisState

    listener = socket.create_server(("127.0.0.1", 0))
    accepted = []
    threading.Thread(target=lambda: [accepted.append(listener.accept())
                                     for _ in iter(int, 1)], daemon=True).start()
    state = RedisState(f"redis://127.0.0.1:{listener.getsockname()[1]}/0", check=False)

    async def timed_call():
        started = time.monotonic()
        await state.acooling_among(["a"])
        return time.monotonic() - started

    async def main():
        waits = await asyncio.gather(*[timed_call() for _ in range(300)])
        await state.aclose()
        return waits

    waits = asyncio.run(main())
    listener.close()
    assert "unreachable" in state.describe()
    assert max(waits) < 4.0, max(waits)  # was ~1 s per round of 32 queued calls: 10 s


@pytest.mark.slow  # a replica of its own, and the 5 s retry interval
def test_redis_lost_mid_run_fails_open_with_one_warning(tmp_path):
    """Requests keep succeeding on local state; Redis back: shared again, spend caught up."""
    import redis

    redis_down = RedisServer().start()
    with BackgroundServer(openai_fake_app(usage=(1000, 0))) as fake:
        config = _config(tmp_path / "router.yaml", fake.url, fake.url, (1.0, 1.0))
        replica = Replica(config, _env(tmp_path / "home", REDIS_URL=redis_down.url,
                                       AGENTCYCLE_ROUTER_NAMESPACE="down")).wait()
        try:
            assert replica.chat("priced").status_code == 200
            redis_down.stop()
            statuses = [replica.chat(route).status_code
                        for route in ("priced", "budget", "cool", "limited") * 2]
            assert statuses == [200] * 8
            assert "unreachable" in httpx.get(replica.url + "/health").json()["state"]
            redis_down.start()  # same port, empty (no persistence)
            time.sleep(5.5)  # the retry interval
            assert replica.chat("priced").status_code == 200
            health = httpx.get(replica.url + "/health").json()
            assert "unreachable" not in health["state"]
            from agentcycle.router.state import utc_day

            spent = redis.Redis(port=redis_down.port).get(f"agentcycle:router:down:spend:"
                                                          f"priced:{utc_day()}")
            assert float(spent) == pytest.approx(3.0)  # spend while it was away caught up: 2 + 1
        finally:
            err = replica.stop()
            redis_down.stop()
    assert "Traceback" not in err, err
    failed = [line for line in err.splitlines() if "router state: Redis at" in line]
    assert len(failed) == 2, err  # one line when it went, one when it came back
    assert "failed" in failed[0] and "local state" in failed[0] and "back" in failed[1]


def test_serve_with_redis_unreachable_is_one_error_line(tmp_path, monkeypatch):
    config = _config(tmp_path / "router.yaml", "http://127.0.0.1:9", "http://127.0.0.1:9",
                     (1.0, 1.0))
    monkeypatch.setenv("REDIS_URL", f"redis://:hunter2@127.0.0.1:{free_port()}/0")
    code, out = cli_run("router", "serve", "--config", str(config), "--port",
                        str(free_port()))
    assert_clean_error(code, out, "router's shared state at redis://127.0.0.1:",
                       "AGENTCYCLE_ROUTER_STATE=local")
    assert "hunter2" not in out  # the password never shows
    monkeypatch.setenv("REDIS_URL", "http://nope")
    code, out = cli_run("router", "serve", "--config", str(config), "--port",
                        str(free_port()))
    assert_clean_error(code, out, "Redis URL is invalid")


def test_settings_pick_the_platforms_valkey(monkeypatch):
    from agentcycle.errors import ServiceError
    from agentcycle.router.shared_state import RedisState, open_state
    from agentcycle.router.state import RouterState
    from agentcycle.settings import Settings

    assert type(open_state(Settings())) is RouterState  # nothing set: per process
    monkeypatch.setenv("VALKEY_HOST", "127.0.0.1")
    monkeypatch.setenv("VALKEY_PORT", str(free_port()))
    monkeypatch.setenv("VALKEY_PASSWORD", "p@ss word")
    assert Settings().router_redis_url.startswith("redis://:p%40ss%20word@127.0.0.1:")
    # A notebook's VALKEY_* (one Valkey for every user) is used only when asked for.
    assert type(open_state(Settings())) is RouterState
    monkeypatch.setenv("AGENTCYCLE_ROUTER_STATE", "redis")
    with pytest.raises(ServiceError, match="shared state at redis://127.0.0.1:"):
        open_state(Settings())
    monkeypatch.delenv("AGENTCYCLE_ROUTER_STATE")
    monkeypatch.setenv("CACHE_URL", "redis://cache:6379/1")
    monkeypatch.setenv("APP_NAME", "legal-agent")
    settings = Settings()
    assert settings.router_redis_url == "redis://cache:6379/1"
    assert settings.router_namespace == "legal-agent"
    monkeypatch.setenv("AGENTCYCLE_ROUTER_STATE", "local")
    assert type(open_state(Settings())) is RouterState
    state = RedisState("redis://:pw@cache:6379/1", namespace="x", check=False)
    assert state.describe() == "redis redis://cache:6379/1 namespace 'x'"


def test_doctor_shows_where_router_state_lives(redis_server, monkeypatch):
    from agentcycle.discovery import discover
    from agentcycle.settings import Settings

    def row():
        return next(r for r in discover(Settings()) if r.service == "router state")

    assert row().mode == "embedded" and row().location.endswith("router.db")
    monkeypatch.setenv("REDIS_URL", f"redis://:hunter2@127.0.0.1:{redis_server.port}/0")
    monkeypatch.setenv("APP_NAME", "legal-agent")
    shared = row()
    assert (shared.mode, shared.reachable) == ("real", True)
    assert "hunter2" not in shared.location and "'legal-agent'" in shared.detail
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    assert row().reachable is False


def test_rate_limit_per_process_by_default(tmp_path):
    """No Redis: the same policy counts in this process (the embedded default)."""
    from agentcycle.router import AllBackendsFailed, Router, load_config

    with BackgroundServer(openai_fake_app()) as fake:
        config = _config(tmp_path / "router.yaml", fake.url, fake.url, (1.0, 1.0))
        router = Router.from_config(load_config(config), log_path=False)
        assert not router.state.shared

        async def main():
            answers = [await router.acomplete(MESSAGES, route="limited", key="k")
                       for _ in range(5)]
            with pytest.raises(AllBackendsFailed) as refused:
                await router.acomplete(MESSAGES, route="limited", key="k")
            other = await router.acomplete(MESSAGES, route="limited", key="other")
            await router.aclose()
            return answers, refused.value, other

        if time.time() % 60 > 55:
            time.sleep(61 - time.time() % 60)
        answers, refused, other = asyncio.run(main())
    assert len(answers) == 5 and other.backend == "local"
    assert refused.status == 429 and 0 < refused.retry_after_s <= 60
    assert "rate limit: 5 requests a minute for this key" in str(refused)


def test_rate_limit_options_are_checked(tmp_path):
    config = tmp_path / "router.yaml"
    config.write_text("backends:\n  m: {model: openai/m, api_base: http://127.0.0.1:9/v1}\n"
                      "routes:\n  r:\n    backends: [m]\n"
                      "    policies: [{rate_limit: {requests_per_minute: 0}}]\n")
    assert_clean_error(*cli_run("router", "check", "--config", str(config)),
                       "router.yaml:6", "requests_per_minute")


def test_one_recovery_probe_among_replicas_and_the_sync_api(redis_server):
    """Two states: the cooldown's end is claimed by one probe; its success clears the
    backend for both. A Router's sync API shares the same state (its own loop's client)."""
    from agentcycle.router import Backend, Router
    from agentcycle.router.shared_state import RedisState

    namespace = uuid.uuid4().hex[:8]
    first, second = (RedisState(redis_server.url, namespace=namespace, cooldown_s=0.2)
                     for _ in range(2))

    async def main():
        await first.arecord_failure("m")
        assert await second.acooling_among(["m", "n"]) == {"m"}
        assert not await second.aprobe_due("m")  # still cooling
        await asyncio.sleep(0.3)
        claims = await asyncio.gather(*[s.aprobe_due("m") for s in (first, second) * 3])
        await second.arecord_success("m")
        cooling = await first.acooling_among(["m"])
        for state in (first, second):
            await state.aclose()
        return claims, cooling

    claims, cooling = asyncio.run(main())
    assert claims.count(True) == 1 and cooling == set()

    with BackgroundServer(openai_fake_app(usage=(1000, 0))) as fake:
        backend = Backend(name="m", model="openai/m", api_base=fake.url + "/v1",
                          transport="direct", input_usd_per_1k=0.5, output_usd_per_1k=0.0)
        shared = RedisState(redis_server.url, namespace=namespace)
        router = Router([backend], routes={"r": [{"budget": {"usd_per_day": 1.0}}]},
                        log_path=False, tracing=False, state=shared)
        try:
            served = [router.complete(MESSAGES, route="r").cost_usd for _ in range(2)]
        finally:
            router.close()

    async def spent() -> float:
        other = RedisState(redis_server.url, namespace=namespace)
        try:
            return await other.aspent_today("r")
        finally:
            await other.aclose()

    assert served == [0.5, 0.5] and asyncio.run(spent()) == 1.0
