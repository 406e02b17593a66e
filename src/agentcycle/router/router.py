"""The router: try the primary backend, fall back in order, account for every call.

A backend that fails (down, timeout, 429, 5xx, context overflow) is put in cooldown so
the next request does not pay for it again; the user's request goes to the next one.
Every call is an LLM span carrying tokens, latency, cost, the backend and the reason
it was chosen (GenAI semantic-convention attribute names).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from agentcycle.errors import ServiceError
from agentcycle.observe.costs import local_cost
from agentcycle.observe.tracing import span
from agentcycle.router.backends import Backend

log = logging.getLogger(__name__)


def import_litellm():
    # LiteLLM fetches its price map from GitHub at import unless told not to.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    return litellm


class AllBackendsFailed(ServiceError):
    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        detail = "; ".join(f"{name}: {err}" for name, err in errors) or "no backends configured"
        super().__init__(f"every model backend failed ({detail})")


@dataclass
class Completion:
    text: str
    backend: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    cost_usd: float
    reason: str
    failed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Router:
    """Ordered fallback with cooldown over a list of backends."""

    def __init__(self, backends: list[Backend], *, cooldown_s: float = 30.0,
                 energy_usd_per_hour: float = 0.0):
        if not backends:
            raise ServiceError("the router needs at least one backend")
        self.backends = list(backends)
        self.cooldown_s = cooldown_s
        self.energy_usd_per_hour = energy_usd_per_hour
        self._cooling_until: dict[str, float] = {}
        import_litellm()  # pay its import (seconds) here, not inside the first call

    def _order(self) -> list[tuple[Backend, str]]:
        now = time.monotonic()
        ready = [b for b in self.backends if self._cooling_until.get(b.name, 0) <= now]
        cooling = [b for b in self.backends if b not in ready]
        # Cooling backends stay as a last resort: better a probe than a failed request.
        ordered = [(b, "primary" if i == 0 and b is self.backends[0] else "fallback")
                   for i, b in enumerate(ready)]
        return ordered + [(b, "probe after cooldown") for b in cooling]

    def complete(self, messages: list[dict[str, Any]], **params: Any) -> Completion:
        """One chat completion from the first backend that answers."""
        failed: list[tuple[str, str]] = []
        for backend, reason in self._order():
            try:
                result = self._call(backend, messages, params)
            except Exception as exc:  # any failure of one backend moves on to the next
                message = _short_error(exc)
                log.warning("backend %s failed: %s", backend.name, message)
                self._cooling_until[backend.name] = time.monotonic() + self.cooldown_s
                failed.append((backend.name, message))
                continue
            self._cooling_until.pop(backend.name, None)
            result.reason = reason if not failed else f"fallback after {failed[-1][0]} failed"
            result.failed = failed
            return result
        raise AllBackendsFailed(failed)

    def _call(self, backend: Backend, messages: list[dict], params: dict) -> Completion:
        litellm = import_litellm()
        with span(f"llm {backend.name}", "LLM", inputs={"messages": messages}) as current:
            started = time.perf_counter()
            response = litellm.completion(
                model=backend.model, messages=messages, api_base=backend.api_base,
                api_key=backend.api_key, timeout=backend.timeout_s, max_retries=0, **params,
            )
            latency_s = time.perf_counter() - started
            usage = response.usage
            prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
            completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
            cost = self._cost(backend, response, prompt_tokens, completion_tokens, latency_s)
            text = response.choices[0].message.content or ""
            current.set_outputs({"text": text})
            current.set_attributes({
                "gen_ai.system": "local" if backend.local else "litellm",
                "gen_ai.request.model": backend.model,
                "gen_ai.response.model": backend.served_model,
                "gen_ai.usage.input_tokens": prompt_tokens,
                "gen_ai.usage.output_tokens": completion_tokens,
                "agentcycle.backend": backend.name,
                "agentcycle.cost_usd": cost,
                "agentcycle.latency_ms": latency_s * 1000,
            })
        return Completion(text=text, backend=backend.name, model=backend.served_model,
                          prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                          latency_ms=latency_s * 1000, cost_usd=cost, reason="")

    def _cost(self, backend: Backend, response: Any, prompt_tokens: int,
              completion_tokens: int, latency_s: float) -> float:
        if backend.input_usd_per_1k is not None or backend.output_usd_per_1k is not None:
            return ((backend.input_usd_per_1k or 0) * prompt_tokens
                    + (backend.output_usd_per_1k or 0) * completion_tokens) / 1000
        if backend.local:
            return local_cost(latency_s, self.energy_usd_per_hour)
        try:
            return float(import_litellm().completion_cost(
                completion_response=response, model=backend.served_model))
        except Exception:  # a model missing from LiteLLM's price map
            log.warning("no price known for %s; set prices in the backend", backend.model)
            return 0.0


def _short_error(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{type(exc).__name__}: {text[:200]}"
