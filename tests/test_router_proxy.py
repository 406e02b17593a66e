"""The proxy over real HTTP: the OpenAI client, streaming, tools, errors, keys, feedback."""

import httpx
import openai
import pytest

from agentcycle.router import Backend, Router
from agentcycle.router.accounting import rows
from agentcycle.router.proxy import create_proxy_app
from agentcycle.router.reports import ab_report
from helpers import BackgroundServer, dead_url, openai_fake_app

MESSAGES = [{"role": "user", "content": "How long to return a deposit?"}]


def fake(name, url, transport="direct", **kw):
    return Backend(name=name, model=f"openai/{name}", api_base=url + "/v1", api_key="k",
                   transport=transport, timeout_s=5, **kw)


def client(proxy, key="proxy-key"):
    return openai.OpenAI(base_url=proxy.url + "/v1", api_key=key, max_retries=0)


def test_the_openai_client_through_the_proxy_to_the_real_model(base_server, isolated_home):
    with dead_url() as dead:
        router = Router([Backend(name="tuned", model="openai/x", api_base=dead, local=True),
                         Backend(name="base", model="openai/base", local=True,
                                 api_base=base_server.base_url, api_key="test-key")],
                        routes={"default": []}, tracing=False)
        with BackgroundServer(create_proxy_app(router, api_key="proxy-key")) as proxy:
            raw = client(proxy).chat.completions.with_raw_response.create(
                model="default", messages=MESSAGES, max_tokens=8)
            plain = raw.parse()
            assert raw.headers["x-agentcycle-backend"] == "base"
            request_id = raw.headers["x-agentcycle-request-id"]
            assert plain.choices[0].message.content and plain.usage.completion_tokens > 0
            chunks = list(client(proxy).chat.completions.create(
                model="default", messages=MESSAGES, max_tokens=8, stream=True))
            streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert streamed.strip()
            models = {m.id for m in client(proxy).models.list()}
            assert models == {"default", "tuned", "base"}
        router.close()
    recorded = {r.id: r for r in rows(isolated_home / "router.db")}
    assert recorded[request_id].backend == "base" and recorded[request_id].status == "ok"
    assert "fallback after tuned failed" in recorded[request_id].reason
    assert any(r.streamed and r.status == "ok" and r.completion_tokens for r in recorded.values())


@pytest.mark.parametrize("transport", ["litellm", "direct"])
def test_tool_calls_pass_through(transport):
    with BackgroundServer(openai_fake_app()) as srv:
        router = Router([fake("m", srv.url, transport)], tracing=False, log_path=False)
        with BackgroundServer(create_proxy_app(router)) as proxy:
            reply = client(proxy).chat.completions.create(
                model="m", messages=MESSAGES, tool_choice="auto", tools=[{
                    "type": "function", "function": {
                        "name": "search", "parameters": {"type": "object", "properties": {
                            "q": {"type": "string"}}}}}])
        sent = srv.server.config.app.state.requests[0]
    call = reply.choices[0].message.tool_calls[0]
    assert call.function.name == "search" and '"deposit"' in call.function.arguments
    assert sent["tools"][0]["function"]["name"] == "search" and sent["tool_choice"] == "auto"


def test_every_backend_rejecting_is_an_openai_error_with_a_real_status():
    with BackgroundServer(openai_fake_app(fail_with=429)) as limited:
        router = Router([fake("a", limited.url), fake("b", limited.url)], tracing=False,
                        log_path=False)
        with BackgroundServer(create_proxy_app(router)) as proxy:
            with pytest.raises(openai.RateLimitError) as failure:
                client(proxy).chat.completions.create(model="default", messages=MESSAGES)
            assert failure.value.status_code == 429
            error = failure.value.body
            assert "every model backend failed" in error["message"]
            assert error["type"] == "rate_limit_error"
            unknown = httpx.post(proxy.url + "/v1/chat/completions",
                                 json={"model": "nope", "messages": MESSAGES})
            assert unknown.status_code == 404
            assert unknown.json()["error"]["code"] == "model_not_found"
            bad = httpx.post(proxy.url + "/v1/chat/completions", content=b"{not json")
            assert bad.status_code == 400 and "messages" in bad.json()["error"]["message"]


def test_all_backends_down_is_a_502_not_a_hang():
    with dead_url() as dead:
        router = Router([Backend(name="d", model="openai/d", api_base=dead, api_key="k")],
                        tracing=False, log_path=False)
        with BackgroundServer(create_proxy_app(router)) as proxy:
            answer = httpx.post(proxy.url + "/v1/chat/completions", timeout=10,
                                json={"model": "default", "messages": MESSAGES})
    assert answer.status_code == 502
    assert answer.json()["error"]["code"] == "all_backends_failed"


def test_the_proxy_key_is_enforced():
    with BackgroundServer(openai_fake_app()) as srv:
        router = Router([fake("m", srv.url)], tracing=False, log_path=False)
        with BackgroundServer(create_proxy_app(router, api_key="proxy-key")) as proxy:
            with pytest.raises(openai.AuthenticationError):
                client(proxy, key="wrong").chat.completions.create(model="m", messages=MESSAGES)
            assert httpx.get(proxy.url + "/v1/models").status_code == 401
            assert httpx.get(proxy.url + "/health").status_code == 200
            ok = client(proxy).chat.completions.create(model="m", messages=MESSAGES)
    assert ok.choices[0].message.content
    assert len(srv.server.config.app.state.requests) == 1  # refused ones never reached it


@pytest.mark.parametrize("transport", ["litellm", "direct"])
def test_a_stream_broken_mid_way_ends_with_an_error_event_not_done(transport, isolated_home):
    with BackgroundServer(openai_fake_app(cut_after=3)) as srv:
        router = Router([fake("m", srv.url, transport)], tracing=False)
        with BackgroundServer(create_proxy_app(router)) as proxy:
            with httpx.stream("POST", proxy.url + "/v1/chat/completions", timeout=10, json={
                    "model": "m", "messages": MESSAGES, "stream": True}) as response:
                events = [line for line in response.iter_lines() if line.startswith("data:")]
            assert response.status_code == 200
        router.close()
    assert events[-1] != "data: [DONE]" and "stream_interrupted" in events[-1]
    assert len(events) == 4  # three words, then the error event
    [record] = rows(isolated_home / "router.db")
    assert record.status == "failed" and record.streamed and "interrupted" in record.error
    assert not router.state.is_ready("m")  # a backend that broke a stream cools down


def test_feedback_feeds_the_ab_report(isolated_home):
    with BackgroundServer(openai_fake_app()) as srv:
        router = Router([fake("a", srv.url), fake("b", srv.url)], tracing=False,
                        routes={"ab": [{"ab": {"arms": {"a": 0.5, "b": 0.5}}}]})
        with BackgroundServer(create_proxy_app(router)) as proxy:
            for i in range(40):
                reply = httpx.post(proxy.url + "/v1/chat/completions", json={
                    "model": "ab", "messages": MESSAGES, "user": f"user-{i}"})
                arm = reply.headers["x-agentcycle-backend"]
                score = 1.0 if arm == "a" else float(i % 2 == 0)
                sent = httpx.post(proxy.url + "/v1/feedback", json={
                    "request_id": reply.headers["x-agentcycle-request-id"], "score": score})
                assert sent.status_code == 200
            missing = httpx.post(proxy.url + "/v1/feedback",
                                 json={"request_id": "req-nope", "score": 1})
            assert missing.status_code == 404
            for score in ("NaN", "inf", None, "good"):  # "NaN" was stored, poisoning means
                bad = httpx.post(proxy.url + "/v1/feedback", json={
                    "request_id": reply.headers["x-agentcycle-request-id"], "score": score})
                assert bad.status_code == 400, (score, bad.text)
        router.close()
    report = {row.arm: row for row in ab_report(isolated_home / "router.db")}
    assert set(report) == {"a", "b"} and report["a"].n + report["b"].n == 40
    assert report["a"].quality_mean == 1.0 and 0.2 < report["b"].quality_mean < 0.8
    assert report["a"].quality_p_value is None and report["b"].quality_p_value < 0.05


@pytest.mark.parametrize("transport", ["litellm", "direct"])
def test_a_request_every_backend_rejects_is_a_400_and_benches_no_backend(transport):
    with BackgroundServer(openai_fake_app(fail_with=400)) as srv:
        router = Router([fake("a", srv.url, transport), fake("b", srv.url, transport)],
                        tracing=False, log_path=False)
        with BackgroundServer(create_proxy_app(router)) as proxy:
            answer = httpx.post(proxy.url + "/v1/chat/completions", timeout=10,
                                json={"model": "default", "messages": MESSAGES})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "invalid_request"
    assert len(srv.server.config.app.state.requests) == 2  # both were tried
    assert router.state.cooling() == []  # the request's fault: both stay in rotation


def test_tag_and_session_headers_steer_the_route():
    with BackgroundServer(openai_fake_app()) as srv:
        router = Router([fake("a", srv.url, tags=["cloud"]), fake("b", srv.url, tags=["legal"])],
                        routes={"ab": [{"ab": {"arms": {"a": 1, "b": 1}}}]}, tracing=False,
                        log_path=False)
        with BackgroundServer(create_proxy_app(router)) as proxy:
            def ask(**headers):
                reply = httpx.post(proxy.url + "/v1/chat/completions", headers=headers,
                                   json={"model": "ab", "messages": MESSAGES})
                return reply.headers["x-agentcycle-backend"]

            assert {ask(**{"x-agentcycle-tags": "legal"}) for _ in range(6)} == {"b"}
            for session in ("s1", "s2", "s3", "s4"):
                assert len({ask(**{"x-session-id": session}) for _ in range(4)}) == 1
            assert len({ask(**{"x-session-id": f"s{i}"}) for i in range(30)}) == 2
            # Non-UTF-8 header bytes were a UnicodeDecodeError: a bare 500.
            odd = httpx.post(proxy.url + "/v1/chat/completions", json={
                "model": "ab", "messages": MESSAGES}, headers={
                "x-session-id": b"caf\xe9", "x-agentcycle-tags": b"legal,\xff"})
            assert odd.status_code == 503, odd.text  # no backend carries the tag "\xff"
            assert odd.json()["error"]["code"] == "no_backend_available"


def test_router_and_litellm_arguments_in_the_body_are_refused_by_name():
    """`route`/`key`/`tags` in a body were a 500 (TypeError), `timeout`/`api_key` a 502
    that benched the backend, and `base_url` sent the backend's key to the client's URL."""
    with BackgroundServer(openai_fake_app()) as srv, BackgroundServer(
            openai_fake_app()) as elsewhere:
        router = Router([fake("a", srv.url, "litellm")], tracing=False, log_path=False)
        with BackgroundServer(create_proxy_app(router)) as proxy:
            for extra in ({"route": "x"}, {"key": "k"}, {"tags": ["a"]}, {"timeout": 1},
                          {"api_key": "x"}, {"base_url": elsewhere.url + "/v1"},
                          {"extra_headers": {"x": "y"}}):
                for stream in (False, True):
                    answer = httpx.post(proxy.url + "/v1/chat/completions", timeout=10, json={
                        "model": "a", "messages": MESSAGES, "stream": stream, **extra})
                    assert answer.status_code == 400, (extra, answer.text)
                    error = answer.json()["error"]
                    assert error["code"] == "unsupported_parameter"
                    assert next(iter(extra)) in error["message"]
            ok = client(proxy).chat.completions.create(model="a", messages=MESSAGES,
                                                        temperature=0.1, seed=1)
    assert ok.choices[0].message.content
    assert router.state.cooling() == []
    assert len(srv.server.config.app.state.requests) == 1
    assert elsewhere.server.config.app.state.requests == []


def test_malformed_messages_and_unknown_paths_are_openai_errors():
    with BackgroundServer(openai_fake_app()) as srv:
        router = Router([fake("a", srv.url)], tracing=False, log_path=False)
        with BackgroundServer(create_proxy_app(router)) as proxy:
            for messages in ([1, 2], [{"content": "no role"}], "hi", []):
                answer = httpx.post(proxy.url + "/v1/chat/completions",
                                    json={"model": "a", "messages": messages})
                assert answer.status_code == 400, answer.text
                assert "messages" in answer.json()["error"]["message"]
            missing = httpx.post(proxy.url + "/v1/embeddings", json={"input": "x"})
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert srv.server.config.app.state.requests == []  # nothing reached the backend
    assert router.state.cooling() == []


def test_a_policy_failing_mid_request_is_a_500_json_error_and_model_must_be_a_string():
    """A policy's exception was a bare "Internal Server Error"; a ConfigError from one
    (the quality model's file gone) read as 404 model_not_found."""
    from agentcycle.errors import ConfigError
    from agentcycle.router import Policy, Route
    from agentcycle.router.policies import Options

    class Broken(Policy):
        name = "broken"

        async def apply(self, candidates, request, state):
            raise ConfigError("quality router model not found: gone.skops")

    with BackgroundServer(openai_fake_app()) as srv:
        backends = [fake("a", srv.url)]
        router = Router(backends, tracing=False, log_path=False, routes={
            "r": Route("r", backends, [Broken(Options(), ["a"])])})
        with BackgroundServer(create_proxy_app(router)) as proxy:
            answers = [httpx.post(proxy.url + "/v1/chat/completions", timeout=10, json={
                "model": "r", "messages": MESSAGES, "stream": stream}) for stream in (0, 1)]
            listed = httpx.post(proxy.url + "/v1/chat/completions",
                                json={"model": ["r"], "messages": MESSAGES})
    for answer in answers:
        assert answer.status_code == 500, answer.text
        error = answer.json()["error"]
        assert error["code"] == "router_error" and "gone.skops" in error["message"]
    assert listed.status_code == 400 and "string `model`" in listed.json()["error"]["message"]
    assert srv.server.config.app.state.requests == []


@pytest.mark.parametrize("transport", ["litellm", "direct"])
def test_a_stream_asking_for_usage_gets_it(transport, isolated_home):
    """stream_options from the client (LangChain's stream_usage) was passed to LiteLLM
    twice: a TypeError that failed, and benched, every backend."""
    with BackgroundServer(openai_fake_app(answer="one two three")) as srv:
        router = Router([fake("a", srv.url, transport)], tracing=False)
        with BackgroundServer(create_proxy_app(router)) as proxy:
            chunks = list(client(proxy).chat.completions.create(
                model="a", messages=MESSAGES, stream=True,
                stream_options={"include_usage": True}))
        router.close()
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three"
    assert chunks[-1].usage.completion_tokens == 20 and router.state.cooling() == []
    [record] = rows(isolated_home / "router.db")
    assert (record.status, record.completion_tokens) == ("ok", 20)


def test_a_config_router_refuses_backend_names_unless_exposed(isolated_home):
    from agentcycle.router.config import parse_config

    with BackgroundServer(openai_fake_app()) as srv:
        text = (f"backends:\n  cloud: {{model: openai/m, api_base: '{srv.url}/v1', "
                f"transport: direct}}\nroutes:\n  capped:\n    backends: [cloud]\n")
        router = Router.from_config(parse_config(text, "router.yaml"), tracing=False,
                                    log_path=False)
        with BackgroundServer(create_proxy_app(router)) as proxy:
            # A backend name would skip the route's policies (its budget): refused.
            with pytest.raises(openai.APIStatusError) as refused:
                client(proxy).chat.completions.create(model="cloud", messages=MESSAGES)
            assert refused.value.status_code in (400, 404) and "capped" in str(refused.value)
            assert {m.id for m in client(proxy).models.list()} == {"capped"}
        router.close()
        exposed = Router.from_config(parse_config(text + "expose_backends: true\n",
                                                  "router.yaml"), tracing=False, log_path=False)
        with BackgroundServer(create_proxy_app(exposed)) as proxy:
            reply = client(proxy).chat.completions.create(model="cloud", messages=MESSAGES)
            assert reply.choices[0].message.content
        exposed.close()
