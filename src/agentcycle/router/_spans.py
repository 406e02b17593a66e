"""LLM spans for routed calls (GenAI semantic-convention attribute names)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from agentcycle.router.backends import Backend

if TYPE_CHECKING:
    from agentcycle.router.router import Completion


class _NoSpan:
    def set_outputs(self, outputs: Any) -> None:
        pass

    def set_attributes(self, attributes: dict) -> None:
        pass


_NO_SPAN = _NoSpan()


def llm_span(backend: Backend, messages: list[dict], enabled: bool) -> Any:
    """An LLM span around one attempt (a no-op when off: the proxy's hot path)."""
    if not enabled:
        return contextlib.nullcontext(_NO_SPAN)
    from agentcycle.observe.tracing import span

    return span(f"llm {backend.name}", "LLM", inputs={"messages": messages},
                attributes={"gen_ai.system": "local" if backend.local else "litellm",
                            "gen_ai.request.model": backend.model,
                            "agentcycle.backend": backend.name})


def span_attributes(result: Completion) -> dict[str, Any]:
    return {
        "gen_ai.response.model": result.model,
        "gen_ai.usage.input_tokens": result.prompt_tokens,
        "gen_ai.usage.output_tokens": result.completion_tokens,
        "agentcycle.cost_usd": result.cost_usd,
        "agentcycle.latency_ms": result.latency_ms,
        "agentcycle.route": result.route,
        "agentcycle.reason": result.reason,
        "agentcycle.request_id": result.request_id,
        **({"agentcycle.arm": result.arm} if result.arm else {}),
    }
