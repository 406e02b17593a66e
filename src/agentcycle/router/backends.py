"""A backend is one OpenAI-compatible model endpoint the router may call."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from agentcycle.settings import Settings

Transport = Literal["litellm", "direct"]


@dataclass
class Backend:
    """One model behind one endpoint.

    ``model`` is a LiteLLM model name: ``openai/<served-name>`` for any
    OpenAI-compatible server (``api_base`` set), or a provider model such as
    ``gpt-4o-mini`` priced from LiteLLM's map.

    ``transport="direct"`` skips the LiteLLM SDK for an OpenAI-compatible ``api_base``
    and posts the request with a pooled HTTP client: LiteLLM costs ~5 ms of CPU per call
    (measured, docs/router.md), more than a fast local engine takes to answer.
    """

    name: str
    model: str
    api_base: str | None = None
    api_key: str | None = None
    local: bool = False
    input_usd_per_1k: float | None = None
    output_usd_per_1k: float | None = None
    timeout_s: float = 120.0
    tags: list[str] = field(default_factory=list)
    context_window: int | None = None
    retries: int = 0
    transport: Transport = "litellm"

    @property
    def served_model(self) -> str:
        return self.model.split("/", 1)[1] if self.model.startswith("openai/") else self.model


def local_backend(name: str, base_url: str, model_name: str, api_key: str | None = None) -> Backend:
    return Backend(name=name, model=f"openai/{model_name}", api_base=base_url,
                   api_key=api_key or "none", local=True, tags=["local"])


def cloud_backend(settings: Settings) -> Backend | None:
    """The platform's LiteLLM gateway (or a provider through the LiteLLM SDK)."""
    if not settings.cloud_model:
        return None
    if settings.litellm_endpoint:
        # The gateway speaks OpenAI; prices still come from LiteLLM's map by model name.
        return Backend(name="cloud", model=f"openai/{settings.cloud_model}",
                       api_base=settings.litellm_endpoint.rstrip("/"),
                       api_key=settings.litellm_master_key or "none", tags=["cloud"])
    return Backend(name="cloud", model=settings.cloud_model, tags=["cloud"])


def default_backends(settings: Settings, local: list[Backend]) -> list[Backend]:
    """Local backends in the given order, then the cloud model when configured."""
    cloud = cloud_backend(settings)
    return [*local, *([cloud] if cloud else [])]
