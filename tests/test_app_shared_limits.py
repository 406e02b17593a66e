"""The agent app's per-key rate and daily token budget live in the router's state: two
app replicas on one real redis-server count against one limit per key (and `/v1/stats`
shows the shared tokens), while per-process state keeps them apart."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient

from agentcycle.agents import ToolAgent
from agentcycle.app import AppPolicy, create_app
from agentcycle.router import Router
from agentcycle.router.backends import local_backend
from agentcycle.router.shared_state import RedisState
from agentcycle.router.state import RouterState
from helpers import BackgroundServer, chat_app
from redis_server import REDIS_SERVER, RedisServer

pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")
KEYS = {"alice": "alice-key-0001", "bob": "bob-key-000002"}
ALICE = {"Authorization": f"Bearer {KEYS['alice']}"}
BOB = {"Authorization": f"Bearer {KEYS['bob']}"}


@pytest.fixture(scope="module")
def redis_url():
    with RedisServer() as server:
        yield server.url


@pytest.fixture(scope="module")
def agent():
    def lookup(term: str) -> str:
        """Look a term up."""
        return "21 days"

    # every answer: one model call of 100 + 20 tokens
    with BackgroundServer(chat_app(lambda body: {"content": "21 days."})) as model:
        router = Router([local_backend("fake", model.url + "/v1", "fake")], tracing=False)
        yield ToolAgent(router, [lookup])
        router.close()


def replicas(agent, state_for, **policy) -> list[TestClient]:
    return [TestClient(create_app(agent, ui=False, state=state_for(),
                                  policy=AppPolicy(api_keys=KEYS, **policy)))
            for _ in range(2)]


def shared(redis_url):
    namespace = f"app-{uuid.uuid4().hex[:8]}"  # one app's replicas share a namespace
    return lambda: RedisState(redis_url, namespace=namespace)


def ask(client, headers) -> int:
    return client.post("/v1/ask", json={"question": "Deposit?"}, headers=headers).status_code


def test_two_replicas_share_one_rate_limit_per_key(agent, redis_url):
    first, second = replicas(agent, shared(redis_url), requests_per_minute=3)
    codes = [ask(client, ALICE) for client in (first, second, first, second)]
    assert codes == [200, 200, 200, 429]
    refused = second.post("/v1/ask", json={"question": "q"}, headers=ALICE)
    assert 1 <= int(refused.headers["retry-after"]) <= 20  # a token every 20 s
    assert ask(second, BOB) == 200  # another key has its own bucket


def test_per_process_state_gives_each_replica_its_own_limit(agent):
    first, second = replicas(agent, RouterState, requests_per_minute=3)
    assert [ask(first, ALICE) for _ in range(3)] == [200] * 3
    assert ask(second, ALICE) == 200 and ask(first, ALICE) == 429


def test_two_replicas_share_one_token_budget_and_report_it(agent, redis_url):
    first, second = replicas(agent, shared(redis_url), tokens_per_day=300)
    assert [ask(client, ALICE) for client in (first, second, first)] == [200, 200, 200]
    assert ask(second, ALICE) == 429  # 360 tokens spent of 300: refused on either replica
    stats = second.get("/v1/stats", headers=BOB).json()
    assert stats["keys"]["alice"]["tokens_today"] == 360 and "redis" in stats["state"]
    assert ask(first, BOB) == 200


def test_a_replica_keeps_answering_when_redis_goes_away(agent):
    with RedisServer() as server:
        state = RedisState(server.url, namespace="gone", timeout_s=0.5)
        client = TestClient(create_app(agent, ui=False, state=state,
                                       policy=AppPolicy(api_keys=KEYS, requests_per_minute=2)))
        assert ask(client, ALICE) == 200
    # Redis is gone: fail open to this replica's own bucket (which still limits)
    assert [ask(client, ALICE) for _ in range(3)] == [200, 200, 429]
