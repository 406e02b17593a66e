"""Shared fixtures: an isolated data dir per test, the real bundled model converted once
(cached where `make demo` caches it), and one real model server for the session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MODEL_CACHE = Path(os.environ.get("AGENTCYCLE_TEST_CACHE", REPO / ".agentcycle" / "models"))

_PLATFORM_VARS = [
    "LITELLM_ENDPOINT", "LITELLM_URL", "LITELLM_API_BASE", "LITELLM_MASTER_KEY",
    "LLM_GATEWAY_URL", "THINKUBE_API_TOKEN", "QDRANT_URL", "QDRANT_HOST", "QDRANT_PORT",
    "LANGFUSE_HOST", "LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY", "MLFLOW_TRACKING_URI",
    "NATS_URL", "NATS_HOST", "DATABASE_URL", "POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_USER",
    "POSTGRES_PASSWORD", "POSTGRES_DB", "AGENTCYCLE_CHAT_MODEL", "AGENTCYCLE_EMBEDDING_MODEL",
    "AGENTCYCLE_CLOUD_MODEL",
    "AGENTCYCLE_SERVER_URL",
    "DOMAIN_NAME", "GITEA_URL", "GITEA_TOKEN", "GITEA_ORG", "GITEA_WEBHOOK_SECRET",
    "ARGOCD_SERVER", "ARGOCD_AUTH_TOKEN", "REDIS_URL", "CACHE_URL", "VALKEY_HOST",
    "VALKEY_PORT", "VALKEY_PASSWORD", "AGENTCYCLE_API_KEYS",
]

# Each xdist worker, and the model servers, kernels and CLIs it starts, gets its share of
# the cores. torch's default (a thread per core in every process) oversubscribes 2 cores
# with 2 workers, and spinning OpenMP threads then cost more than they compute: a
# fine-tune test beside a GGUF export took 50 s with 2 threads each, 35 s with 1.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))
if _WORKERS > 1 and "torch" in sys.modules:  # imported before us: its pool is sized
    sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """Each test gets its own data dir and sees none of the platform's variables."""
    for name in _PLATFORM_VARS:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("AGENTCYCLE_HOME", str(home))
    monkeypatch.setenv("AGENTCYCLE_CACHE", str(MODEL_CACHE))
    return home


@pytest.fixture(scope="session")
def base_model_dir() -> Path:
    from agentcycle.models import chat_model_dir
    from agentcycle.settings import Settings

    return chat_model_dir(Settings(cache_dir=MODEL_CACHE))


@pytest.fixture(scope="session")
def embedder():
    from agentcycle.models import bundled_embedding_dir
    from agentcycle.rag import Embedder

    return Embedder(bundled_embedding_dir())


@pytest.fixture(scope="session")
def base_server(base_model_dir):
    """The real engine (transformers serve behind the key gate) on 127.0.0.1."""
    from agentcycle.serving import ModelServer

    with ModelServer(base_model_dir, api_key="test-key", model_name="base") as server:
        yield server


@pytest.fixture
def base_server_by_name(monkeypatch, base_server):
    """The session's server named by the platform's variables, as a deployed agent or a
    notebook on the platform reaches its model server."""
    monkeypatch.setenv("AGENTCYCLE_SERVER_URL", base_server.base_url)
    monkeypatch.setenv("THINKUBE_API_TOKEN", base_server.api_key)
    return base_server


@pytest.fixture
def settings(isolated_home):
    from agentcycle.settings import Settings

    return Settings()


@pytest.fixture
def legal_agent(settings, base_server, embedder):
    """A RAG agent over the legal corpus, answering through the real base server."""
    from agentcycle.examples import LEGAL_COLLECTION, legal_corpus_dir
    from agentcycle.rag import RagAgent, ingest
    from agentcycle.router import Router
    from agentcycle.router.backends import local_backend

    ingest(legal_corpus_dir(), LEGAL_COLLECTION, settings, embedder=embedder)
    router = Router([local_backend("base", base_server.base_url, "base", "test-key")])
    return RagAgent(settings, LEGAL_COLLECTION, router, embedder=embedder, max_tokens=32)


@pytest.fixture(autouse=True)
def no_shared_router_state(monkeypatch):
    """Routers keep their state per process unless a test points them at a Redis."""
    for name in ("REDIS_URL", "CACHE_URL", "VALKEY_HOST", "VALKEY_PORT", "VALKEY_PASSWORD",
                 "AGENTCYCLE_ROUTER_STATE", "AGENTCYCLE_ROUTER_NAMESPACE", "APP_NAME"):
        monkeypatch.delenv(name, raising=False)
