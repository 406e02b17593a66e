"""What a backend charges: configured prices, else LiteLLM's price map; local is free
unless an energy price is configured."""

from __future__ import annotations

import functools
import logging

from agentcycle.observe.costs import local_cost
from agentcycle.router._litellm import import_litellm
from agentcycle.router.backends import Backend

log = logging.getLogger(__name__)


def configured(backend: Backend) -> bool:
    return backend.input_usd_per_1k is not None or backend.output_usd_per_1k is not None


@functools.cache
def _map_prices(model: str) -> tuple[float, float] | None:
    entry = import_litellm().model_cost.get(model)
    if not entry:
        return None
    return (1000 * float(entry.get("input_cost_per_token") or 0),
            1000 * float(entry.get("output_cost_per_token") or 0))


def prices_per_1k(backend: Backend) -> tuple[float, float]:
    """USD per 1K (input, output) tokens; (0, 0) for local and unpriced models."""
    if configured(backend):
        return backend.input_usd_per_1k or 0.0, backend.output_usd_per_1k or 0.0
    if backend.local:
        return 0.0, 0.0
    found = _map_prices(backend.served_model) or _map_prices(backend.model)
    if found is None:
        _warn_unpriced(backend.model)
        return 0.0, 0.0
    return found


@functools.cache
def _warn_unpriced(model: str) -> None:
    log.warning("no price known for %s; set input/output_usd_per_1k on the backend", model)


def call_cost(backend: Backend, prompt_tokens: int, completion_tokens: int, latency_s: float,
              energy_usd_per_hour: float) -> float:
    if backend.local and not configured(backend):
        return local_cost(latency_s, energy_usd_per_hour)
    usd_in, usd_out = prices_per_1k(backend)
    return (usd_in * prompt_tokens + usd_out * completion_tokens) / 1000
