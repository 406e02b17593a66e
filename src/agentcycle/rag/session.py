"""Wire a RAG agent to its models from the settings: the glue the CLI and app share.

Which model answers:
- ``model`` is a model directory: serve it locally (transformers serve / vLLM);
- ``model`` is a name: ask the server at ``AGENTCYCLE_SERVER_URL`` when set, else the
  LiteLLM gateway at ``LITELLM_ENDPOINT``;
- no ``model``: the server at ``AGENTCYCLE_SERVER_URL``, else the bundled model served
  locally. The cloud model (``AGENTCYCLE_CLOUD_MODEL``) is the last fallback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from agentcycle.errors import ModelError, ServiceError
from agentcycle.models.embeddings import Embedder
from agentcycle.rag.agent import RagAgent
from agentcycle.router import Backend, Router
from agentcycle.router.backends import default_backends, local_backend
from agentcycle.settings import Settings


def served_models(base_url: str, api_key: str | None = None) -> list[str]:
    try:
        response = httpx.get(base_url.rstrip("/") + "/models", timeout=5,
                             headers={"Authorization": f"Bearer {api_key or 'none'}"})
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise ServiceError(f"the model server at {base_url} is unreachable: {exc}") from None
    return [m["id"] for m in response.json().get("data", [])]


@contextlib.contextmanager
def local_backends(settings: Settings, model: str | None = None, *,
                   meanwhile: Callable[[], object] | None = None) -> Iterator[list[Backend]]:
    """The primary backend(s) for ``model``, starting a local server when needed.
    ``meanwhile`` runs while that server starts (or at once when none is started): the
    caller's own loading overlaps the engine's start instead of following it."""
    from agentcycle.models import chat_model_dir
    from agentcycle.models.registry import is_model_uri, resolve_model_uri
    from agentcycle.serving import ModelServer

    if is_model_uri(model):  # models:/NAME@ALIAS: a registered version, served locally
        model = str(resolve_model_uri(model, settings))
    if model and Path(model).expanduser().is_dir() or not model and not settings.server_url:
        model_dir = Path(model).expanduser() if model else chat_model_dir(settings)
        server = ModelServer(model_dir).launch()
        try:
            if meanwhile:
                meanwhile()
            server.wait_ready()
            yield [local_backend("local", server.base_url, server.model_name)]
        finally:
            server.stop()
        return
    if meanwhile:
        meanwhile()
    if settings.server_url:
        available = served_models(settings.server_url, settings.thinkube_api_token)
        name = model or (available[0] if available else None)
        if name not in available:
            raise ModelError(f"unknown model '{model}': the server at {settings.server_url} "
                             f"serves {', '.join(available) or 'nothing'}")
        yield [local_backend("server", settings.server_url, name, settings.thinkube_api_token)]
        return
    if settings.litellm_endpoint:
        yield [Backend(name="litellm", model=f"openai/{model}",
                       api_base=settings.litellm_endpoint,
                       api_key=settings.litellm_master_key or "none")]
        return
    raise ModelError(f"unknown model '{model}': not a model directory, and neither "
                     "AGENTCYCLE_SERVER_URL nor LITELLM_ENDPOINT is set to ask for it by name")


@contextlib.contextmanager
def router_session(settings: Settings, model: str | None = None, *,
                   meanwhile: Callable[[], object] | None = None) -> Iterator[Router]:
    """A router over ``model``'s backend(s) (a local server started if needed, with
    ``meanwhile`` run as it starts), the cloud model last; closed (its accounting log
    flushed) when the block ends."""
    with local_backends(settings, model, meanwhile=meanwhile) as primary:
        router = Router(default_backends(settings, primary),
                        energy_usd_per_hour=settings.energy_usd_per_hour)
        try:
            yield router
        finally:
            router.close()


@contextlib.contextmanager
def agent_session(settings: Settings, collection: str, *, model: str | None = None,
                  top_k: int = 3, max_tokens: int = 128,
                  keep_sentences: int | None = None) -> Iterator[RagAgent]:
    from agentcycle.rag.store import ChunkStore

    ChunkStore(settings, collection).require()  # before paying for a server start
    loaded: dict[str, Embedder] = {}

    def load() -> None:  # sentence-transformers and MLflow: ~25 s of a CPU start
        from agentcycle.models import embedding_model_dir
        from agentcycle.observe.tracing import setup_tracking

        loaded["embedder"] = Embedder(embedding_model_dir(settings))
        setup_tracking(settings)

    with router_session(settings, model, meanwhile=load) as router:
        yield RagAgent(settings, collection, router, embedder=loaded["embedder"],
                       top_k=top_k, max_tokens=max_tokens, keep_sentences=keep_sentences)
