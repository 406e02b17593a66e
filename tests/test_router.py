import os

import pytest

from agentcycle.router import AllBackendsFailed, Backend, Router
from agentcycle.router.backends import cloud_backend, local_backend
from agentcycle.settings import Settings
from helpers import BackgroundServer, dead_url, fake_cloud_app

MESSAGES = [{"role": "user", "content": "How long to return a deposit?"}]


def test_down_primary_is_skipped_and_the_request_succeeds(base_server, settings):
    with dead_url() as dead:
        router = Router([local_backend("tuned", dead, "legal-tuned"),
                         local_backend("base", base_server.base_url, "base", "test-key")])
        first = router.complete(MESSAGES, max_tokens=4)
        assert first.backend == "base" and first.text
        assert first.reason == "fallback after tuned failed"
        assert first.failed[0][0] == "tuned"
        # The dead backend is cooling down: the next request does not pay for it again.
        second = router.complete(MESSAGES, max_tokens=4)
        assert second.backend == "base" and second.failed == []


def test_cloud_fallback_through_litellm_is_priced_from_litellms_map(monkeypatch, settings):
    with BackgroundServer(fake_cloud_app()) as cloud, dead_url() as dead:
        monkeypatch.setenv("AGENTCYCLE_CLOUD_MODEL", "gpt-4o-mini")
        monkeypatch.setenv("LITELLM_ENDPOINT", cloud.url + "/v1")
        monkeypatch.setenv("LITELLM_MASTER_KEY", "sk-master")
        backend = cloud_backend(Settings())
        router = Router([local_backend("local", dead, "base"), backend])
        result = router.complete(MESSAGES, max_tokens=20)
    assert result.backend == "cloud" and "21 days" in result.text
    assert (result.prompt_tokens, result.completion_tokens) == (100, 20)
    # gpt-4o-mini: $0.15 / 1M input, $0.60 / 1M output tokens in LiteLLM's price map.
    assert result.cost_usd == pytest.approx(100 * 0.15e-6 + 20 * 0.6e-6)
    assert cloud.server.config.app.state.requests[0]["auth"] == "Bearer sk-master"


def test_configured_prices_and_energy_cost(settings):
    with BackgroundServer(fake_cloud_app()) as cloud:
        priced = Backend(name="p", model="openai/gpt-4o-mini", api_base=cloud.url + "/v1",
                         api_key="k", input_usd_per_1k=1.0, output_usd_per_1k=2.0)
        assert Router([priced]).complete(MESSAGES).cost_usd == pytest.approx(0.1 + 0.04)
        local = local_backend("l", cloud.url + "/v1", "gpt-4o-mini")
        free = Router([local]).complete(MESSAGES)
        assert free.cost_usd == 0.0
        metered = Router([local], energy_usd_per_hour=3600.0).complete(MESSAGES)
        assert metered.cost_usd == pytest.approx(metered.latency_ms / 1000, rel=0.05)


def test_every_backend_failing_is_one_clear_error(settings):
    with BackgroundServer(fake_cloud_app(fail_with=429)) as limited, dead_url() as dead:
        router = Router([local_backend("down", dead, "m"),
                         local_backend("limited", limited.url + "/v1", "m")])
        with pytest.raises(AllBackendsFailed) as failure:
            router.complete(MESSAGES)
    assert [name for name, _ in failure.value.errors] == ["down", "limited"]
    assert "RateLimitError" in failure.value.errors[1][1]




# A call on a long-lived loop in a thread (like the router's), then one on a second
# loop (like agent.run()'s asyncio.run): LiteLLM rebinds its one logging worker and
# forgets the old task, which the garbage collector then finds pending.
STRAND_LITELLMS_WORKER = """
import asyncio, gc, sys, threading, time
if sys.argv[1] == "ours":
    from agentcycle.router._litellm import import_litellm
    litellm = import_litellm()
else:
    import litellm

async def call():
    await litellm.acompletion(model="openai/gpt-4o-mini", mock_response="ok",
                              messages=[{"role": "user", "content": "hi"}])

loop = asyncio.new_event_loop()
threading.Thread(target=loop.run_forever, daemon=True).start()
asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=30)
time.sleep(0.5)
asyncio.run(call())
gc.collect()

async def other():
    await asyncio.Event().wait()

other_loop = asyncio.new_event_loop()
other_loop.create_task(other())
other_loop.close()
gc.collect()
print("done")
"""


def test_litellm_on_two_loops_logs_no_destroyed_task_error():
    import subprocess
    import sys

    def strand(which: str) -> str:
        done = subprocess.run([sys.executable, "-c", STRAND_LITELLMS_WORKER, which],
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"})
        assert done.stdout.strip() == "done", done.stderr[-2000:]
        return done.stderr

    if "LoggingWorker._worker_loop" not in strand("plain"):
        pytest.skip("this LiteLLM no longer strands its logging worker: drop the filter")
    stderr = strand("ours")
    assert "LoggingWorker" not in stderr
    # Only LiteLLM's worker is quiet: any other task destroyed pending still shows.
    assert "Task was destroyed but it is pending" in stderr and "other()" in stderr
