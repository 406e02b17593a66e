"""Tracing (MLflow embedded, Langfuse over OTLP when configured), costs, trace queries."""

from agentcycle.observe.costs import local_cost, price_per_1k
from agentcycle.observe.tracing import TraceRow, list_traces, setup_tracking, span

__all__ = ["TraceRow", "list_traces", "local_cost", "price_per_1k", "setup_tracking", "span"]
