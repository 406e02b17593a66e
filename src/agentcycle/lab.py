"""What the AI Lab notebooks share: the run profile, the services in use, a chat endpoint.

A notebook runs a small configuration in CI (``AGENTCYCLE_NOTEBOOK_PROFILE=ci``) and the
full one for a user (the default). It talks to the platform's services when their
variables are set and to agentcycle's embedded defaults when not, and says which:

>>> from agentcycle import Settings, lab
>>> settings = Settings()
>>> lab.show_services(settings)          # a table: platform or embedded, per service
>>> steps = lab.sized(ci=4, full=200)    # small in CI, full for a user
>>> with lab.chat_endpoint(settings) as chat:
...     ChatOpenAI(**chat.langchain_kwargs())
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from agentcycle.settings import Settings

__all__ = ["PROFILE_VARIABLE", "ChatEndpoint", "chat_endpoint", "profile", "show_services",
           "sized"]

PROFILE_VARIABLE = "AGENTCYCLE_NOTEBOOK_PROFILE"
_PROFILES = ("ci", "full")

# The platform variable that replaces each embedded default (discovery's service names).
PLATFORM_VARIABLES = {
    "model server": "AGENTCYCLE_SERVER_URL", "qdrant": "QDRANT_URL",
    "mlflow": "MLFLOW_TRACKING_URI", "litellm": "LITELLM_ENDPOINT",
    "langfuse": "LANGFUSE_HOST", "nats": "NATS_URL", "postgresql": "DATABASE_URL",
    "router state": "REDIS_URL", "chat model": "AGENTCYCLE_CHAT_MODEL",
    "embedding model": "AGENTCYCLE_EMBEDDING_MODEL", "llm gateway": "LLM_GATEWAY_URL",
}

T = TypeVar("T")


def profile(environ: Mapping[str, str] | None = None) -> str:
    """``ci`` (a small run, minutes on 2 cores) or ``full`` (the default: the real lesson)."""
    value = (environ if environ is not None else os.environ).get(PROFILE_VARIABLE, "full")
    value = value.strip().lower() or "full"
    if value not in _PROFILES:
        raise ValueError(f"{PROFILE_VARIABLE}={value!r}: expected one of {', '.join(_PROFILES)}")
    return value


def sized(ci: T, full: T, environ: Mapping[str, str] | None = None) -> T:
    """The value for this run's profile: ``ci`` in CI, ``full`` for a user."""
    return ci if profile(environ) == "ci" else full


def show_services(settings: Settings, check: bool = True) -> list[dict[str, Any]]:
    """Print (and return) each service: the platform's, or the embedded default in use
    and (``switch``) the variable that would point it at the platform's."""
    from rich.console import Console
    from rich.table import Table

    from agentcycle.discovery import discover

    rows = []
    for status in discover(settings, check=check):
        row = status.as_dict()
        variable = PLATFORM_VARIABLES.get(status.service, "")
        row["switch"] = variable if status.mode != "real" else ""
        rows.append(row)
    table = Table(title="services this notebook uses", width=80)
    for column in ("service", "mode", "location", "platform variable"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row["service"], row["mode"], row["location"], row["switch"])
    Console(width=80).print(table)
    return rows


@dataclass(frozen=True)
class ChatEndpoint:
    """An OpenAI-compatible chat endpoint: the platform's LiteLLM, a model server, or the
    bundled model served here."""

    base_url: str
    api_key: str
    model: str
    source: str  # litellm | server | bundled

    def openai_kwargs(self) -> dict[str, str]:
        """For ``openai.OpenAI(**...)``."""
        return {"base_url": self.base_url, "api_key": self.api_key}

    def langchain_kwargs(self) -> dict[str, str]:
        """For ``langchain_openai.ChatOpenAI(**...)``."""
        return {"base_url": self.base_url, "api_key": self.api_key, "model": self.model}

    def litellm_model(self) -> str:
        """The name LiteLLM-based clients (CrewAI) use for this endpoint's model."""
        return f"openai/{self.model}"


@contextlib.contextmanager
def chat_endpoint(settings: Settings, model: str | None = None) -> Iterator[ChatEndpoint]:
    """The chat endpoint a notebook talks to, printing which one it is.

    ``LITELLM_ENDPOINT`` set: the platform's LiteLLM (``model`` or its first model);
    ``AGENTCYCLE_SERVER_URL`` set: that server; neither: the bundled SmolLM2-135M (or
    ``AGENTCYCLE_CHAT_MODEL``) served on 127.0.0.1 until the block ends."""
    from agentcycle.rag.session import served_models

    if settings.litellm_endpoint or settings.server_url:
        source = "litellm" if settings.litellm_endpoint else "server"
        url = (settings.litellm_endpoint or settings.server_url or "").rstrip("/")
        url = url if url.endswith("/v1") else url + "/v1"
        key = (settings.litellm_master_key if source == "litellm"
               else settings.thinkube_api_token) or "none"
        name = model or (served_models(url, key) or [""])[0]
        print(f"chat model: {name} through the platform's {source} at {url}")
        yield ChatEndpoint(url, key, name, source)
        return
    from agentcycle.models import chat_model_dir
    from agentcycle.serving import ModelServer

    key = "lab-" + os.urandom(6).hex()
    with ModelServer(chat_model_dir(settings), api_key=key, model_name="local") as server:
        print(f"chat model: the bundled model served at {server.base_url} "
              "(set LITELLM_ENDPOINT to use the platform's LiteLLM)")
        yield ChatEndpoint(server.base_url, key, server.model_name, "bundled")
