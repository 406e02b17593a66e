"""Tool-calling agents over plain typed Python functions."""

from agentcycle.agents.tools._agent import DEFAULT_SYSTEM_PROMPT, ToolAgent
from agentcycle.agents.tools._tool import Tool, ToolError, as_tools, tool

__all__ = ["DEFAULT_SYSTEM_PROMPT", "Tool", "ToolAgent", "ToolError", "as_tools", "tool"]
