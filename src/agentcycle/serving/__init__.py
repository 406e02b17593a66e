"""Serve a base or fine-tuned model over OpenAI-compatible HTTP on a real engine."""

from agentcycle.serving.server import ModelServer, choose_engine, wait_for_health

__all__ = ["ModelServer", "choose_engine", "wait_for_health"]
