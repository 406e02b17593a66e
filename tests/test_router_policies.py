"""Routing behaviour against real OpenAI-protocol servers on 127.0.0.1."""

import asyncio
import time

import pytest

from agentcycle.router import AllBackendsFailed, Backend, Route, Router
from agentcycle.router.accounting import rows
from agentcycle.router.policies import ABSplit, build_policies
from helpers import BackgroundServer, dead_url, openai_fake_app

MESSAGES = [{"role": "user", "content": "How long to return a deposit?"}]


def backend(name, url, transport="litellm", **kw):
    kw.setdefault("api_key", "k")
    return Backend(name=name, model=f"openai/{name}", api_base=url if url.endswith("/v1")
                   else url + "/v1", transport=transport, timeout_s=kw.pop("timeout_s", 5),
                   **kw)


def router(backends, policies=(), **kw):
    kw.setdefault("tracing", False)
    return Router(backends, routes={"r": list(policies)}, **kw)


@pytest.mark.parametrize("transport", ["litellm", "direct"])
def test_fallback_on_429_timeout_and_down(transport):
    with BackgroundServer(openai_fake_app(fail_with=429)) as limited, \
            BackgroundServer(openai_fake_app(delay_s=2)) as slow, \
            BackgroundServer(openai_fake_app(answer="ok")) as good, dead_url() as dead:
        r = router([backend("down", dead, transport), backend("limited", limited.url, transport),
                    backend("slow", slow.url, transport, timeout_s=0.3),
                    backend("good", good.url, transport)])
        result = r.complete(MESSAGES)
    assert result.backend == "good" and result.text == "ok"
    assert [name for name, _ in result.failed] == ["down", "limited", "slow"]
    assert "RateLimit" in result.failed[1][1] or "429" in result.failed[1][1]
    assert "imeout" in result.failed[2][1]
    assert result.reason == "fallback after slow failed"


def test_fallback_policy_limits_which_errors_fall_back():
    with BackgroundServer(openai_fake_app(fail_with=429)) as limited, \
            BackgroundServer(openai_fake_app()) as good:
        r = router([backend("limited", limited.url), backend("good", good.url)],
                   [{"fallback": {"errors": ["timeout"]}}])
        with pytest.raises(AllBackendsFailed) as failure:
            r.complete(MESSAGES)
    assert [n for n, _ in failure.value.errors] == ["limited"]
    assert failure.value.status == 429


def test_context_window_skip_and_overflow_fallback():
    long = [{"role": "user", "content": "word " * 400}]
    with BackgroundServer(openai_fake_app(max_prompt_chars=100)) as small, \
            BackgroundServer(openai_fake_app(answer="big")) as big:
        # Declared too small: skipped before any call.
        declared = router([backend("small", small.url, context_window=64),
                           backend("big", big.url)])
        result = declared.complete(long)
        assert result.backend == "big" and "context window" in result.reason
        assert small.server.config.app.state.requests == []
        with pytest.raises(AllBackendsFailed, match="no backend left") as failure:
            router([backend("small", small.url, context_window=64)]).complete(long)
        assert failure.value.status == 400  # the proxy answers context_length_exceeded
        # Undeclared: the server's context_length_exceeded error falls back.
        for transport in ("litellm", "direct"):
            undeclared = router([backend("small", small.url, transport),
                                 backend("big", big.url, transport)])
            result = undeclared.complete(long)
            assert result.backend == "big", transport
            assert result.failed and result.failed[0][0] == "small"


def test_cooldown_then_a_background_probe_brings_the_backend_back():
    app = openai_fake_app(answer="primary", fail_with=500)
    with BackgroundServer(app) as primary, BackgroundServer(openai_fake_app(answer="b")) as b:
        r = router([backend("p", primary.url, "direct"), backend("b", b.url, "direct")],
                   cooldown_s=0.3)
        assert r.complete(MESSAGES).backend == "b"
        assert len(app.state.requests) == 1
        # Cooling: no request pays for the dead backend a second time.
        assert r.complete(MESSAGES).failed == []
        assert len(app.state.requests) == 1
        app.state.fail_with = None  # it recovers
        time.sleep(0.35)
        # The first request after the cooldown starts a probe but is not the probe.
        assert r.complete(MESSAGES).backend == "b"
        deadline = time.monotonic() + 5
        while r.state.cooling() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(app.state.requests) == 2  # the probe
        assert app.state.requests[1]["max_tokens"] == 1
        assert r.complete(MESSAGES).backend == "p"


def test_least_latency_prefers_the_fastest_backend():
    with BackgroundServer(openai_fake_app(delay_s=0.15)) as slow, \
            BackgroundServer(openai_fake_app()) as fast:
        r = router([backend("slow", slow.url, "direct"), backend("fast", fast.url, "direct")],
                   ["least_latency"])
        chosen = [r.complete(MESSAGES).backend for _ in range(4)]
    assert chosen[:2] == ["slow", "fast"]  # each unmeasured backend is tried once
    assert chosen[2:] == ["fast", "fast"]
    assert r.state.latency_ms["slow"] > r.state.latency_ms["fast"]


def test_cost_ceiling_drops_expensive_backends():
    with BackgroundServer(openai_fake_app(answer="cheap")) as srv:
        pricey = backend("pricey", srv.url, input_usd_per_1k=10.0, output_usd_per_1k=30.0)
        cheap = backend("cheap", srv.url, input_usd_per_1k=0.001, output_usd_per_1k=0.002)
        r = router([pricey, cheap], [{"cost_ceiling": {"max_usd_per_request": 0.01}}])
        result = r.complete(MESSAGES, max_tokens=50)
    assert result.backend == "cheap"
    assert "cost ceiling dropped pricey" in result.reason
    assert result.cost_usd == pytest.approx((100 * 0.001 + 20 * 0.002) / 1000)


def test_budget_spent_degrades_to_local_only_and_survives_a_restart(isolated_home):
    with BackgroundServer(openai_fake_app(answer="cloud")) as cloud, \
            BackgroundServer(openai_fake_app(answer="local")) as local:
        def make():
            return router([backend("cloud", cloud.url, input_usd_per_1k=1.0,
                                   output_usd_per_1k=1.0),
                           backend("local", local.url, local=True)],
                          [{"budget": {"usd_per_day": 0.15}}])

        first = make()
        assert first.complete(MESSAGES).backend == "cloud"  # costs $0.12
        assert first.complete(MESSAGES).backend == "cloud"  # $0.12 < $0.15: still allowed
        third = first.complete(MESSAGES)
        assert third.backend == "local" and "budget spent" in third.reason
        first.close()
        restarted = make()
        assert restarted.state.spent_today("r") == pytest.approx(0.24)
        assert restarted.complete(MESSAGES).backend == "local"
        restarted.close()


def test_tag_routing_from_the_route_and_the_request():
    with BackgroundServer(openai_fake_app()) as srv:
        a = backend("a", srv.url, tags=["cloud"])
        b = backend("b", srv.url, tags=["local", "legal"])
        r = router([a, b], [{"tags": {"prefer": ["cloud"]}}])
        assert r.complete(MESSAGES).backend == "a"
        assert asyncio.run(r.acomplete(MESSAGES, route="r", tags=["legal"])).backend == "b"
        with pytest.raises(AllBackendsFailed, match="no backend left"):
            r.complete(MESSAGES, tags=["gpu"])


def test_ab_split_follows_the_weights_and_sticks_to_a_key():
    [split] = build_policies([{"ab": {"arms": {"a": 0.8, "b": 0.2}}}], ["a", "b"])
    assert isinstance(split, ABSplit)
    arms = [split.assign("r", f"user-{i}") for i in range(2000)]
    assert 0.76 < arms.count("a") / len(arms) < 0.84
    assert all(split.assign("r", f"user-{i}") == arms[i] for i in range(200))
    with BackgroundServer(openai_fake_app()) as srv:
        r = router([backend("a", srv.url), backend("b", srv.url)],
                   [{"ab": {"arms": {"a": 0.5, "b": 0.5}}}])
        seen = {r.complete(MESSAGES, key="alice").backend for _ in range(5)}
        result = r.complete(MESSAGES, key="alice")
    assert len(seen) == 1 and result.arm == result.backend == seen.pop()
    assert "a/b arm" in result.reason and "sticky" in result.reason


def test_a_cooling_arm_is_named_in_the_reason():
    """The served backend said "a/b arm down (sticky); primary" when the arm was cooling
    and the other backend answered in its place."""
    with BackgroundServer(openai_fake_app()) as srv, dead_url() as dead:
        r = router([backend("up", srv.url), backend("down", dead)],
                   [{"ab": {"arms": {"up": 1, "down": 1}}}], log_path=False)
        key = next(f"user-{i}" for i in range(100)
                   if r.routes["r"].policies[0].assign("r", f"user-{i}") == "down")
        first = r.complete(MESSAGES, key=key)
        second = r.complete(MESSAGES, key=key)
    assert first.reason.endswith("fallback after down failed")
    assert (second.backend, second.arm, second.failed) == ("up", "down", [])
    assert "down cooling down: tried last" in second.reason


def test_quality_policy_sends_hard_prompts_to_the_strong_backend():
    class StandIn:  # the learned model's interface: predict(messages) -> (strong?, p_fail)
        def predict(self, messages):
            hard = "statute" in messages[-1]["content"]
            return hard, 0.9 if hard else 0.1

    with BackgroundServer(openai_fake_app()) as srv:
        r = router([backend("cheap", srv.url), backend("strong", srv.url)],
                   [{"quality": {"model": "unused.skops", "strong": ["strong"]}}])
        r.routes["r"].policies[0]._model = StandIn()
        easy = r.complete(MESSAGES)
        hard = r.complete([{"role": "user", "content": "Which statute applies?"}])
    assert easy.backend == "cheap" and "p_fail=0.10 -> cheap" in easy.reason
    assert hard.backend == "strong" and "p_fail=0.90 -> strong" in hard.reason


def test_fifty_concurrent_requests_with_a_dead_primary(isolated_home):
    async def main(r):
        return await asyncio.gather(*(r.acomplete(MESSAGES, route="r", key=f"u{i}")
                                      for i in range(50)))

    with BackgroundServer(openai_fake_app(delay_s=0.05)) as srv, dead_url() as dead:
        for transport in ("litellm", "direct"):
            r = router([backend("dead", dead, transport), backend("live", srv.url, transport)])
            results = asyncio.run(main(r))
            assert {x.backend for x in results} == {"live"}, transport
            assert len({x.request_id for x in results}) == 50
            r.close()
    recorded = rows(isolated_home / "router.db")
    assert len(recorded) == 100 and {x.status for x in recorded} == {"ok"}


def test_retries_with_backoff_before_falling_back():
    app = openai_fake_app(fail_with=429)
    with BackgroundServer(app) as limited, BackgroundServer(openai_fake_app()) as good:
        r = router([backend("limited", limited.url, "direct", retries=2),
                    backend("good", good.url, "direct")])
        started = time.perf_counter()
        assert r.complete(MESSAGES).backend == "good"
    assert len(app.state.requests) == 3
    assert time.perf_counter() - started > 0.3  # 0.25 s and 0.5 s backoff, jittered


def test_sync_and_async_give_the_same_answer():
    with BackgroundServer(openai_fake_app(answer="same")) as srv:
        r = Router([backend("x", srv.url)], tracing=False)
        sync = r.complete(MESSAGES)
        routed = asyncio.run(r.acomplete(MESSAGES))
    assert (sync.text, sync.backend, sync.prompt_tokens, sync.reason) == \
        (routed.text, routed.backend, routed.prompt_tokens, routed.reason)


def test_route_objects_and_unknown_routes():
    with BackgroundServer(openai_fake_app()) as srv:
        a = backend("a", srv.url)
        r = Router([a], routes={"only": Route("only", [a])}, tracing=False)
        assert r.complete(MESSAGES, route="a").backend == "a"  # a backend name is a route
        with pytest.raises(Exception, match="unknown model or route 'nope'"):
            r.complete(MESSAGES, route="nope")


def test_calls_are_llm_spans_with_route_reason_and_cost(settings):
    import mlflow

    from agentcycle.observe import list_traces
    from agentcycle.observe.tracing import span

    with BackgroundServer(openai_fake_app(answer="one two")) as srv, dead_url() as dead:
        r = Router([backend("down", dead), backend("up", srv.url, input_usd_per_1k=1.0,
                                                   output_usd_per_1k=1.0)],
                   routes={"r": []}, log_path=False)
        with span("agent", "AGENT"):  # the caller's span: the router's nests under it
            result = r.complete(MESSAGES)

        async def streamed():
            return await (await r.astream(MESSAGES)).text()

        assert asyncio.run(streamed()) == "one two"
    mlflow.flush_trace_async_logging()
    newest, first = list_traces(settings, last=2)
    spans = {s.name: s for s in mlflow.get_trace(first.trace_id).data.spans}
    assert set(spans) == {"agent", "llm down", "llm up"}
    up = spans["llm up"]
    assert up.parent_id == spans["agent"].span_id
    assert up.attributes["agentcycle.reason"] == "fallback after down failed"
    assert up.attributes["agentcycle.request_id"] == result.request_id
    assert up.attributes["agentcycle.cost_usd"] == pytest.approx(0.12)
    assert spans["llm down"].status.status_code == "ERROR"
    [stream_span] = mlflow.get_trace(newest.trace_id).data.spans
    assert stream_span.attributes["agentcycle.streamed"] is True
    assert stream_span.attributes["gen_ai.usage.output_tokens"] == 20


def test_quality_policy_with_a_real_trained_router_from_yaml(tmp_path, embedder, monkeypatch):
    from agentcycle.router import parse_config
    from agentcycle.router.quality import train_quality_router

    hard = [f"Which statute section governs case {i} of an eviction appeal?" for i in range(12)]
    easy = [f"Say hello to person number {i}." for i in range(12)]
    trained = train_quality_router(hard + easy, [False] * 12 + [True] * 12, embedder=embedder,
                                   strong_share=0.5, cv_folds=3)
    trained.save(tmp_path / "quality.skops")
    with BackgroundServer(openai_fake_app()) as srv:
        config = parse_config(f"""
backends:
  cheap: {{model: openai/cheap, api_base: {srv.url}/v1, local: true}}
  strong: {{model: openai/strong, api_base: {srv.url}/v1}}
routes:
  smart:
    backends: [cheap, strong]
    policies: [{{quality: {{model: {tmp_path / 'quality.skops'}, strong: [strong]}}}}]
""")
        r = Router.from_config(config, log_path=False, tracing=False)
        policy = r.routes["smart"].policies[0]
        policy.predictor()._embedder = embedder  # the session's MiniLM, not a second copy
        hard_one = r.complete([{"role": "user", "content": "Which statute section governs "
                                                          "an appeal of an eviction?"}])
        easy_one = r.complete([{"role": "user", "content": "Say hello to person 99."}])
    assert hard_one.backend == "strong" and "-> strong" in hard_one.reason
    assert easy_one.backend == "cheap" and "-> cheap" in easy_one.reason
    # The same model on a route that may send nearly everything to the strong backend.
    generous = Router.from_config(parse_config(f"""
backends:
  cheap: {{model: openai/cheap, api_base: http://127.0.0.1:9/v1, local: true}}
  strong: {{model: openai/strong, api_base: http://127.0.0.1:9/v1}}
routes:
  smart:
    backends: [cheap, strong]
    policies: [{{quality: {{model: {tmp_path / 'quality.skops'}, strong: [strong],
                            strong_share: 0.95}}}}]
"""), log_path=False, tracing=False)
    recalibrated = generous.routes["smart"].policies[0].predictor()
    assert recalibrated.strong_share == 0.95 and recalibrated.threshold < trained.threshold
    generous.close()


def test_route_timeout_and_max_attempts():
    with BackgroundServer(openai_fake_app(delay_s=1.0)) as slow, \
            BackgroundServer(openai_fake_app(answer="fast")) as fast, dead_url() as dead:
        r = router([backend("slow", slow.url, "direct", timeout_s=30),
                    backend("fast", fast.url, "direct")], [{"timeout": {"seconds": 0.2}}])
        started = time.perf_counter()
        result = r.complete(MESSAGES)
        assert result.backend == "fast" and time.perf_counter() - started < 0.9
        capped = router([backend("d1", dead), backend("d2", dead), backend("ok", fast.url)],
                        [{"fallback": {"max_attempts": 2}}])
        with pytest.raises(AllBackendsFailed) as failure:
            capped.complete(MESSAGES)
    assert [name for name, _ in failure.value.errors] == ["d1", "d2"]


@pytest.mark.parametrize("transport", ["litellm", "direct"])
def test_stopping_the_primary_mid_load_fails_no_request(transport):
    async def load(r, primary):
        async def one(i):
            if i == 60:
                await asyncio.to_thread(primary.__exit__, None, None, None)  # stop it
            return await r.acomplete(MESSAGES, route="r")

        async def client(start):
            return [await one(i) for i in range(start, 200, 8)]

        return [x for part in await asyncio.gather(*(client(s) for s in range(8)))
                for x in part]

    with BackgroundServer(openai_fake_app(answer="secondary")) as secondary:
        primary = BackgroundServer(openai_fake_app(answer="primary", delay_s=0.01)).__enter__()
        r = router([backend("p", primary.url, transport), backend("s", secondary.url, transport)])
        results = asyncio.run(load(r, primary))
    assert len(results) == 200  # every request answered: none raised
    served = [x.backend for x in results]
    assert served[0] == "p" and served.count("s") > 50
