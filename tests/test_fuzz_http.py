"""Hostile input against every HTTP endpoint we serve, over real HTTP on 127.0.0.1: the
agent app (``/v1/ask``, ``/v1/feedback``, ``/v1/workflows/{id}/resume``, ``/v1/stats``,
``/health``, ``/ready``), the router proxy (OpenAI-compatible) and the model server's key
gate in front of a fake engine speaking the OpenAI protocol.

Malformed JSON, wrong types, huge and deeply nested bodies, invalid UTF-8, NUL bytes,
wrong content types, missing and oversized headers, wrong methods, seeded random
mutations, slow clients. The contract: never a 500, never a traceback in a body or in
the server's log, every answer bounded in time, each refusal a status with a JSON body
in the endpoint's format (OpenAI's error object on the OpenAI-compatible ones), and the
server's memory back where it was after a burst."""

from __future__ import annotations

import gc
import json
import logging
import random
import socket
import threading
import time
from types import SimpleNamespace

import httpx
import pytest

from agentcycle.agents import AgentResult, BaseAgent
from agentcycle.app import AppPolicy, create_app
from agentcycle.router import Backend, Router
from agentcycle.router.proxy import create_proxy_app
from agentcycle.serving.adapter_engine import AdapterEngine, build_app
from agentcycle.serving.gate import build_gate
from helpers import BackgroundServer, openai_fake_app

KEY = "fuzz-key-000001"
AUTH = {"Authorization": f"Bearer {KEY}"}
SEED = 1111
DEPTH = 100_000


class EchoAgent(BaseAgent):
    """An agent with a workflow's resume step, answering at once."""

    kind = "echo"

    def run(self, task: str, **options) -> AgentResult:
        return AgentResult(answer=task[:40], kind=self.kind)

    def resume(self, thread_id: str, decision: dict) -> AgentResult:
        return AgentResult(answer=f"{thread_id}: {decision['action']}", kind=self.kind)


class LogTrap(logging.Handler):
    """Collects ERROR records (and any with a traceback) from the servers' loggers."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.records.append(record)


@pytest.fixture(scope="module")
def log_trap():
    # Earlier tests' garbage (tasks of loops they left) is collected before the trap
    # is set, so what it catches comes from the servers under fuzz.
    gc.collect()
    trap = LogTrap()
    loggers = [logging.getLogger(n) for n in ("", "uvicorn", "uvicorn.error", "agentcycle")]
    for logger in loggers:
        logger.addHandler(trap)
    yield trap
    for logger in loggers:
        logger.removeHandler(trap)


@pytest.fixture(scope="module")
def engine():
    app = openai_fake_app("fine")
    app.get("/health")(lambda: {"status": "ok"})  # as transformers serve has
    with BackgroundServer(app) as server:
        yield server


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory):
    """One MLflow store for the module (a keyed request is traced): creating one costs
    seconds."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(autouse=True)
def one_mlflow_store(mlflow_uri, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)


@pytest.fixture(scope="module")
def app_server(log_trap, mlflow_uri):
    policy = AppPolicy(api_keys={"fuzz": KEY}, requests_per_minute=100_000,
                       max_concurrency=2, max_queue=4, queue_timeout_s=5)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
        with BackgroundServer(create_app(EchoAgent(), ui=False, policy=policy)) as server:
            warm = httpx.post(server.url + "/v1/ask", json={"question": "warm up"},
                              headers=AUTH, timeout=120)  # the MLflow store is made once
            assert warm.status_code == 200, warm.text
            yield server


@pytest.fixture(scope="module")
def proxy_server(engine, log_trap):
    router = Router([Backend(name="fake", model="openai/fake", api_base=engine.url + "/v1",
                             api_key="k", timeout_s=5)], routes={"default": []},
                    tracing=False)
    with BackgroundServer(create_proxy_app(router, api_key=KEY)) as server:
        yield server


@pytest.fixture(scope="module")
def gate_server(engine, log_trap):
    with BackgroundServer(build_gate(engine.url, "/models/engine-name", "base", KEY)) as server:
        yield server


class ParamsOnlyEngine(AdapterEngine):
    """The adapter engine's real request handling (names, sampling parameters) over a
    stand-in for the model: no weights load, ``complete`` echoes the parameters."""

    def __init__(self) -> None:  # no model
        self.base_name, self.names = "base", ["base", "legal"]
        self.tokenizer = SimpleNamespace(pad_token_id=0, eos_token_id=0)

    def complete(self, name: str, body: dict) -> dict:
        kwargs = self.generate_kwargs(body)
        if kwargs.get("top_p") is not None and not 0 < kwargs["top_p"] <= 1:
            raise ValueError("`top_p` has to be a float > 0 and < 1")  # as generate() does
        return {"object": "chat.completion", "model": name, "choices": [{
            "index": 0, "message": {"role": "assistant", "content": "ok"},
            "finish_reason": "stop"}]}


@pytest.fixture(scope="module")
def adapter_server(log_trap):
    with BackgroundServer(build_app(ParamsOnlyEngine())) as server:
        yield server


def nested(depth: int = DEPTH, kind: str = "array") -> bytes:
    if kind == "array":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


# Bodies that are not what any endpoint wants: (label, bytes).
GARBAGE: list[tuple[str, bytes]] = [
    ("empty", b""), ("truncated", b'{"question": "x'), ("null", b"null"), ("list", b"[]"),
    ("number", b"123"), ("string", b'"question"'), ("true", b"true"),
    ("invalid utf-8", b'{"question": "\xff\xfe\xfd"}'), ("latin-1 bytes", b"\xe9\xe8"),
    ("nul in json", b'{"question": "a\x00b"}'), ("escaped nul", b'{"question": "a\\u0000b"}'),
    ("lone surrogate", b'{"question": "\\ud800"}'), ("nested arrays", nested()),
    ("nested objects", nested(kind="object")), ("nested, small", nested(30_000)),
    ("huge number", b'{"question": 1' + b"0" * 5000 + b"}"),
    ("nan", b'{"question": NaN, "score": NaN}'), ("duplicate keys", b'{"a": 1, "a": 2}'),
    ("bom", b'\xef\xbb\xbf{"question": "x"}'), ("trailing garbage", b'{"question": "x"} {'),
    ("binary", bytes(range(256))),
]


def wrong_types(field_names: list[str]) -> list[tuple[str, bytes]]:
    values = [None, 0, -1, 1.5, 10**30, True, [], {}, [1, 2], {"a": "b"}, "", "x" * 5000]
    return [(f"{name}={value!r}"[:60], json.dumps({**dict.fromkeys(field_names, "x"),
                                                   name: value}).encode())
            for name in field_names for value in values]


def mutations(valid: bytes, count: int, seed: int = SEED) -> list[tuple[str, bytes]]:
    """Seeded byte-level mutations of a valid body: flips, cuts, inserts, repeats."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        data = bytearray(valid)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(data))
            op = rng.choice(("flip", "cut", "insert", "repeat"))
            if op == "flip":
                data[at] = rng.randrange(256)
            elif op == "cut":
                del data[at:at + rng.randint(1, 8)]
            elif op == "insert":
                data[at:at] = bytes(rng.choice(b'{}[]",:\\\x00\xff0a') for _ in range(3))
            else:
                data[at:at] = data[at:at + 16] * rng.randint(2, 50)
            if not data:
                data = bytearray(b"{")
        out.append((f"mutation {i}", bytes(data)))
    return out


CONTENT_TYPES = [None, "application/json", "text/plain", "application/x-www-form-urlencoded",
                 "multipart/form-data; boundary=x", "application/json; charset=latin-1",
                 "application/octet-stream", "application/json; charset=utf-16"]


def check(response: httpx.Response, label: str, openai: bool) -> None:
    """The contract for one answer."""
    where = f"{label}: {response.status_code} {response.text[:300]!r}"
    assert response.status_code != 500 and response.status_code < 600, where
    assert "Traceback" not in response.text and 'File "' not in response.text, where
    if response.status_code >= 400:
        assert response.headers.get("content-type", "").startswith("application/json"), where
        body = response.json()
        if openai:
            error = body.get("error")
            assert isinstance(error, dict) and isinstance(error.get("message"), str), where
            assert "type" in error and "code" in error, where
        else:
            assert "detail" in body or "error" in body, where


def post_all(url: str, cases: list[tuple[str, bytes]], openai: bool, headers: dict,
             content_types: list[str | None] | None = None) -> int:
    sent = 0
    with httpx.Client(timeout=15) as client:
        for label, body in cases:
            for content_type in content_types or ["application/json"]:
                extra = {"content-type": content_type} if content_type else {}
                started = time.monotonic()
                response = client.post(url, content=body, headers={**headers, **extra})
                assert time.monotonic() - started < 10, f"{label}: slow answer"
                check(response, f"{label} ({content_type})", openai)
                sent += 1
    return sent


def assert_quiet(trap: LogTrap) -> None:
    messages = [f"{r.name}: {r.getMessage()[:200]}" for r in trap.records]
    trap.records.clear()
    assert not messages, messages


APP_POSTS = {"/v1/ask": (["question"], b'{"question": "How long for a deposit?", '
                                       b'"max_tokens": 16}'),
             "/v1/feedback": (["trace_id", "score", "comment"],
                              b'{"trace_id": "tr-0", "score": 2, "comment": "ok"}'),
             "/v1/workflows/t1/resume": (["decision", "text", "reason"],
                                         b'{"decision": "edit", "text": "a", "reason": "b"}')}


def test_the_agent_app_refuses_hostile_bodies_cleanly(app_server, log_trap):
    sent = 0
    for path, (fields, valid) in APP_POSTS.items():
        url = app_server.url + path
        sent += post_all(url, GARBAGE, False, AUTH,
                         CONTENT_TYPES if path == "/v1/ask" else None)
        sent += post_all(url, wrong_types(fields) + mutations(valid, 40), False, AUTH)
    assert sent > 300
    assert_quiet(log_trap)


HI = [{"role": "user", "content": "hi"}]
BAD_MESSAGES = [{"role": "user", "content": 5}, {"role": "user", "content": None},
                {"role": "user", "content": [{"type": "text", "text": 1}]},
                {"role": "user", "content": {"a": 1}}, {"role": 5}, {"role": "nobody"},
                {"role": "user", "content": "x" * 100_000}, {"role": "tool", "content": "x"}]


def fuzz_chat(url: str, model: str, fields: list[str], extra: dict,
              headers: dict) -> int:
    """Chat completions: garbage under every content type, each field of a valid
    request given each wrong type, bad messages, seeded mutations of the valid one."""
    valid = {"model": model, "messages": HI, **extra}
    types = [(label, json.dumps({**valid, **json.loads(body)}).encode())
             for label, body in wrong_types(fields)]
    messages = [(f"message {m!r}"[:60], json.dumps({**valid, "messages": [m]}).encode())
                for m in BAD_MESSAGES]
    sent = post_all(url, GARBAGE, True, headers, CONTENT_TYPES)
    return sent + post_all(url, types + messages + mutations(json.dumps(valid).encode(), 60),
                           True, headers)


def test_the_router_proxy_refuses_hostile_bodies_in_openai_format(proxy_server, log_trap):
    sent = fuzz_chat(proxy_server.url + "/v1/chat/completions", "default",
                     ["model", "messages", "max_tokens", "temperature", "stream", "tools",
                      "stop", "user"], {"max_tokens": 8}, AUTH)
    sent += post_all(proxy_server.url + "/v1/feedback", GARBAGE + wrong_types(
        ["request_id", "score"]), True, AUTH)
    assert sent > 300
    assert_quiet(log_trap)


def test_the_gate_refuses_hostile_bodies_in_openai_format(gate_server, log_trap):
    assert fuzz_chat(gate_server.url + "/v1/chat/completions", "base",
                     ["model", "messages", "max_tokens", "tools", "tool_choice", "stream"],
                     {}, AUTH) > 200
    assert_quiet(log_trap)


def test_the_adapter_engine_refuses_hostile_bodies_in_openai_format(adapter_server, log_trap):
    assert fuzz_chat(adapter_server.url + "/v1/chat/completions", "legal",
                     ["model", "max_tokens", "temperature", "top_p", "stop", "seed"],
                     {"max_tokens": 8, "temperature": 0.5, "top_p": 0.9}, {}) > 200
    assert_quiet(log_trap)


@pytest.mark.parametrize("server", ["app_server", "proxy_server", "gate_server",
                                    "adapter_server"])
def test_wrong_methods_paths_and_keys_are_json_refusals(server, request, log_trap):
    base = request.getfixturevalue(server).url
    openai = server != "app_server"
    paths = {"app_server": ["/v1/ask", "/v1/feedback", "/v1/workflows/t1/resume",
                            "/v1/stats", "/health", "/ready", "/nowhere"],
             "proxy_server": ["/v1/chat/completions", "/v1/models", "/v1/feedback",
                              "/health", "/nowhere"],
             "gate_server": ["/v1/chat/completions", "/v1/models", "/health"],
             "adapter_server": ["/v1/chat/completions", "/v1/models", "/nowhere"]}[server]
    keys = [{}, {"Authorization": "Bearer"}, {"Authorization": "Bearer wrong-key-123"},
            {"Authorization": "Basic " + "x" * 4000}, {"X-API-Key": b"\xff\xfe-not-ascii"}]
    with httpx.Client(timeout=15) as client:
        for path in paths:
            for method in ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]:
                response = client.request(method, base + path, headers=AUTH, content=b"{}")
                if method != "HEAD":
                    check(response, f"{method} {path}", openai)
                assert response.status_code != 500
            for headers in keys:
                response = client.post(base + path, headers=headers, content=b"{}")
                check(response, f"POST {path} with {list(headers)}", openai)
    assert_quiet(log_trap)


def raw_exchange(port: int, request: bytes, *, timeout: float = 10) -> bytes:
    """Send raw bytes, read the answer until the server closes or the timeout."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks) and _complete(b"".join(chunks)):
                break
        return b"".join(chunks)


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return True


@pytest.mark.parametrize("server", ["app_server", "proxy_server", "gate_server"])
def test_broken_http_is_refused_at_the_door(server, request):
    """What no HTTP client library sends: bad header bytes, no Host, a huge header,
    a lying Content-Length. The server answers 4xx (or closes), never a 500 or a hang."""
    port = request.getfixturevalue(server).port
    path = b"/v1/ask" if server == "app_server" else b"/v1/chat/completions"
    auth = b"Authorization: Bearer " + KEY.encode() + b"\r\n"
    cases = [
        b"POST " + path + b" HTTP/1.1\r\n" + auth + b"Content-Length: 2\r\n\r\n{}",  # no Host
        b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n" + auth + b"X-Big: " + b"a" * 200_000
        + b"\r\nContent-Length: 2\r\n\r\n{}",
        b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n" + auth + b"X-Bin: \xff\x00\xfe\r\n"
        b"Content-Length: 2\r\n\r\n{}",
        b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n" + auth + b"Content-Length: -5\r\n\r\n{}",
        b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n" + auth
        + b"Content-Length: 99999999999999999999\r\n\r\n{}",
        b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n" + auth
        + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        b"GARBAGE\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64),  # a TLS hello
    ]
    for raw in cases:
        started = time.monotonic()
        answer = raw_exchange(port, raw, timeout=8)
        assert time.monotonic() - started < 8, f"{raw[:60]!r}: no answer, no close"
        status = answer.split(b"\r\n", 1)[0]
        assert b" 500 " not in status and b"Traceback" not in answer, (raw[:60], answer[:300])


@pytest.mark.parametrize("server", ["app_server", "proxy_server"])
def test_slow_clients_hold_no_run_slot_and_each_request_is_bounded(server, request):
    """Slowloris: clients that trickle a body (or never finish it) must not keep others
    waiting. The app's run slots (2 here) are taken only once a body has arrived, and a
    body that takes too long to arrive is refused with a 408."""
    target = request.getfixturevalue(server)
    path = b"/v1/ask" if server == "app_server" else b"/v1/chat/completions"
    head = (b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + KEY.encode() + b"\r\nContent-Type: application/json\r\nContent-Length: 60\r\n"
            b"\r\n{\"question\": ")
    slow = []
    for i in range(8):
        sock = socket.create_connection(("127.0.0.1", target.port), timeout=5)
        sock.sendall(head if i % 2 else head[:40])  # stalled in the body, or the headers
        slow.append(sock)
    try:
        good = ({"question": "quick?"} if server == "app_server" else
                {"model": "default", "messages": [{"role": "user", "content": "hi"}]})
        started = time.monotonic()
        response = httpx.post(target.url + path.decode(), json=good, headers=AUTH, timeout=10)
        assert response.status_code == 200, response.text
        assert time.monotonic() - started < 5
    finally:
        for sock in slow:
            sock.close()


def test_a_body_trickled_past_the_deadline_is_a_408(app_server):
    app = app_server.server.config.app
    app.state.guard.policy.body_timeout_s = 1.0
    try:
        with socket.create_connection(("127.0.0.1", app_server.port), timeout=10) as sock:
            sock.sendall(b"POST /v1/ask HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                         + KEY.encode() + b"\r\nContent-Length: 40\r\n\r\n{")
            started = time.monotonic()
            answer = b""
            while b"\r\n\r\n" not in answer and time.monotonic() - started < 8:
                sock.sendall(b" ")
                time.sleep(0.2)
                with_timeout = sock.gettimeout()
                sock.settimeout(0.05)
                try:
                    answer += sock.recv(65536)
                except TimeoutError:
                    pass
                finally:
                    sock.settimeout(with_timeout)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b'"request_timeout"' in answer
        assert time.monotonic() - started < 4
    finally:
        app.state.guard.policy.body_timeout_s = 30.0


def test_the_proxy_bounds_the_body_it_reads(proxy_server):
    big = b'{"model": "default", "messages": [{"role": "user", "content": "' + b"x" * (
        17 * 1024 * 1024) + b'"}]}'
    response = httpx.post(proxy_server.url + "/v1/chat/completions", content=big,
                          headers=AUTH, timeout=30)
    assert response.status_code == 413, response.text[:300]
    assert response.json()["error"]["code"] == "request_too_large"


def _rss_kb() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def test_memory_after_a_hostile_burst_is_bounded(app_server, proxy_server, gate_server):
    """The servers run in this process: its RSS after a second burst of hostile requests
    is within a few MB of its RSS after the first (the first warms caches)."""
    cases = GARBAGE + mutations(b'{"question": "x", "messages": []}', 40, seed=7)
    targets = [(app_server.url + "/v1/ask", False), (proxy_server.url
               + "/v1/chat/completions", True), (gate_server.url + "/v1/chat/completions",
                                                 True)]

    def burst() -> None:
        threads = [threading.Thread(target=post_all, args=(url, cases, openai, AUTH))
                   for url, openai in targets]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)

    burst()
    before = _rss_kb()
    for _ in range(3):
        burst()
    grown_mb = (_rss_kb() - before) / 1024
    print(f"RSS {before / 1024:.0f} MB after the first burst, {grown_mb:+.1f} MB after 3 more "
          f"({3 * 3 * len(cases)} requests)")
    assert grown_mb < 40, f"RSS grew {grown_mb:.1f} MB over 3 bursts"
