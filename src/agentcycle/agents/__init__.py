"""Agents: one interface (``run``/``arun`` -> :class:`AgentResult`) over every kind.

- RAG: :class:`agentcycle.rag.RagAgent`;
- tool-calling: :class:`ToolAgent` over plain typed Python functions;
- multi-agent over NATS: :mod:`agentcycle.agents.multi`;
- agentic workflows (LangGraph, checkpoints, approval): :mod:`agentcycle.agents.workflow`.
"""

from agentcycle.agents._protocol import Agent, BaseAgent
from agentcycle.agents._result import AgentResult, Source, Step, ToolCallRecord
from agentcycle.agents.tools import Tool, ToolAgent, ToolError, tool

__all__ = ["Agent", "AgentResult", "BaseAgent", "Source", "Step", "Tool", "ToolAgent",
           "ToolCallRecord", "ToolError", "tool"]
