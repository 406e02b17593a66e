"""Deploy phase (first cut): the agent as a FastAPI service with a Gradio UI."""

from agentcycle.app.service import AskRequest, create_app

__all__ = ["AskRequest", "create_app"]
