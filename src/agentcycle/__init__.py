"""agentcycle: the AI agent lifecycle on your own hardware.

Prototype a RAG agent, fine-tune a small model for its domain, serve it, route to it,
trace and evaluate it. Each phase is a package; these are the names most users need.
"""

from agentcycle.errors import AgentcycleError
from agentcycle.settings import Settings

__version__ = "0.1.0"
__all__ = ["AgentcycleError", "Settings", "__version__"]
