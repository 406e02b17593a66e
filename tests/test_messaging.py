"""The embedded NATS server (the real nats-server binary): start, stop, reuse across
processes, no orphan on SIGTERM; where NATS is; an unreachable NATS is one clear error."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from agentcycle.errors import ServiceError
from agentcycle.messaging import (
    NatsServer,
    connect,
    nats_server_binary,
    nats_session,
    nats_url,
    new_traceparent,
    parse_traceparent,
    trace_id_of,
)
from agentcycle.messaging.server import _accepts, _is_nats

# A process that owns the embedded server of the store given as argv[1] and waits.
_OWNER = """
import sys, time
from agentcycle.messaging import NatsServer
server = NatsServer(sys.argv[1]).start()
print(server.url, server.pid, flush=True)
time.sleep(120)
"""


def _owner(store) -> tuple[subprocess.Popen, str, int]:
    child = subprocess.Popen([sys.executable, "-c", _OWNER, str(store)],
                             stdout=subprocess.PIPE, text=True)
    url, pid = child.stdout.readline().split()
    return child, url, int(pid)


def _gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _is_nats(pid):
            return True
        time.sleep(0.05)
    return False


async def _roundtrip(url: str) -> bytes:
    nc = await connect(url)
    try:
        async def pong(msg):
            await msg.respond(b"pong:" + msg.data)

        sub = await nc.subscribe("ping", cb=pong)
        reply = await nc.request("ping", b"1", timeout=2)
        await sub.unsubscribe()
        info = await nc.jetstream().account_info()  # JetStream is on
        assert info.api is not None
        return reply.data
    finally:
        await nc.close()


def test_binary_comes_from_the_wheel():
    path = nats_server_binary()
    version = subprocess.run([str(path), "--version"], capture_output=True, text=True)
    assert "nats-server: v2." in version.stdout


def test_start_reuse_and_stop_in_one_process(tmp_path):
    with NatsServer(tmp_path / "nats") as first:
        assert first.started_here and first.url.startswith("nats://127.0.0.1:")
        assert asyncio.run(_roundtrip(first.url)) == b"pong:1"
        with NatsServer(tmp_path / "nats") as second:
            assert (second.url, second.started_here) == (first.url, False)
        assert _accepts(first.url)  # the first user still holds it
        pid = first.pid
        assert (tmp_path / "nats" / "jetstream").is_dir()
    assert _gone(pid) and not (tmp_path / "nats" / "server.json").exists()


def test_last_user_stops_the_server_whoever_started_it(tmp_path):
    store = tmp_path / "nats"
    child, url, pid = _owner(store)
    try:
        with NatsServer(store) as reused:
            assert (reused.url, reused.pid, reused.started_here) == (url, pid, False)
            child.send_signal(signal.SIGTERM)  # the owner leaves while we still use it
            child.wait(10)
            assert asyncio.run(_roundtrip(url)) == b"pong:1"
        assert _gone(pid)  # we were the last user
    finally:
        child.kill()


def test_sigterm_of_the_owner_leaves_no_orphan(tmp_path):
    child, url, pid = _owner(tmp_path / "nats")
    child.send_signal(signal.SIGTERM)
    assert child.wait(10) == -signal.SIGTERM  # it still dies of SIGTERM
    assert _gone(pid)


def test_a_killed_owner_leaves_the_server_to_the_others_then_the_last_one_stops_it(
        tmp_path):
    store = tmp_path / "nats"
    child, url, pid = _owner(store)
    with NatsServer(store) as server:
        assert (server.url, server.started_here) == (url, False)
        child.kill()  # SIGKILL: no cleanup can run; we still use the server
        child.wait(10)
        time.sleep(1.5)  # three rounds of its keeper
        assert _is_nats(pid) and asyncio.run(_roundtrip(url)) == b"pong:1"
        state = json.loads((store / "server.json").read_text())
        assert (state["pid"], state["url"]) == (pid, url)
    assert _gone(pid)


def test_the_crash_of_the_last_user_does_not_leave_the_server_forever(tmp_path):
    child, url, pid = _owner(tmp_path / "nats")
    keeper = json.loads((tmp_path / "nats" / "server.json").read_text())["keeper"]
    child.kill()
    child.wait(10)
    assert _gone(pid, timeout=5), "nobody uses the server: its keeper must stop it"
    assert _gone_pid(keeper)
    with NatsServer(tmp_path / "nats") as server:  # the next user starts a fresh one
        assert server.started_here and server.pid != pid


def _gone_pid(pid: int, timeout: float = 5) -> bool:
    from agentcycle._processes import alive

    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


def test_nats_session_and_url_follow_the_settings(settings, monkeypatch, tmp_path):
    from agentcycle.settings import Settings

    with nats_session(settings) as url:
        assert _accepts(url)
        state = json.loads((settings.nats_dir / "server.json").read_text())
        assert state["url"] == url
    assert not _accepts(url)

    url = nats_url(settings)  # kept for the process (stopped at exit)
    assert nats_url(settings) == url and _accepts(url)
    from agentcycle.messaging.client import _process_servers

    _process_servers.pop(str(settings.nats_dir)).stop()
    assert not _accepts(url)

    monkeypatch.setenv("AGENTCYCLE_HOME", str(tmp_path / "platform-home"))
    monkeypatch.setenv("NATS_HOST", "nats.example.internal")
    monkeypatch.setenv("NATS_CLIENT_PORT", "4333")
    platform = Settings()
    assert nats_url(platform) == "nats://nats.example.internal:4333"
    with nats_session(platform) as given:
        assert given == "nats://nats.example.internal:4333"
    assert not platform.nats_dir.exists()  # nothing embedded was started


def test_unreachable_nats_is_one_clear_error():
    started = time.monotonic()
    with pytest.raises(ServiceError, match=r"NATS at nats://127\.0\.0\.1:9 is unreachable"):
        asyncio.run(connect("nats://127.0.0.1:9"))
    assert time.monotonic() - started < 5  # not nats-py's 30 s of reconnect attempts


def test_a_server_that_cannot_start_says_why(tmp_path):
    store = tmp_path / "nats"
    store.write_text("a file where the store directory should be")
    with pytest.raises(ServiceError, match="embedded NATS store .* cannot be created"):
        NatsServer(store).start()


def test_traceparent_helpers():
    header = new_traceparent()
    trace, span = parse_traceparent(header)
    assert len(trace) == 32 and len(span) == 16
    assert trace_id_of(header) == f"tr-{trace}"
    assert parse_traceparent("00-" + "0" * 32 + "-" + "1" * 16 + "-01") is None
    assert parse_traceparent("garbage") is None and trace_id_of(None) is None


@pytest.mark.skipif(not os.path.exists("/proc"), reason="pid check reads /proc")
def test_a_recycled_pid_is_not_taken_for_the_server(tmp_path):
    store = tmp_path / "nats"
    store.mkdir()
    (store / "server.json").write_text(json.dumps({"pid": os.getpid(),
                                                   "url": "nats://127.0.0.1:9"}))
    with NatsServer(store) as server:  # our own pid is alive but not a nats-server
        assert server.started_here and server.pid != os.getpid()


def test_doctor_shows_nats_real_or_embedded(settings, monkeypatch):
    from agentcycle.discovery import discover
    from agentcycle.settings import Settings

    def nats_row(current):
        return next(r for r in discover(current, check=True) if r.service == "nats")

    row = nats_row(settings)
    assert (row.mode, row.location) == ("embedded", str(settings.nats_dir))
    assert "started on demand" in row.detail
    with nats_session(settings) as url:
        assert nats_row(settings).detail.startswith(f"running at {url}")
        monkeypatch.setenv("NATS_URL", url)
        real = nats_row(Settings())
        assert (real.mode, real.location, real.reachable) == ("real", url, True)
    monkeypatch.setenv("NATS_URL", "nats://127.0.0.1:9")
    assert nats_row(Settings()).reachable is False
