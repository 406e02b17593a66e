"""Deploy phase: any agent as a FastAPI service with a Gradio UI, behind a policy
(API keys with names, per-key rate and token limits, size and concurrency bounds)."""

from agentcycle.app.feedback import FeedbackReceipt, FeedbackRequest, record_feedback
from agentcycle.app.policy import AppPolicy, KeyLimits
from agentcycle.app.service import AskRequest, create_app
from agentcycle.app.ui import render

__all__ = ["AppPolicy", "AskRequest", "FeedbackReceipt", "FeedbackRequest", "KeyLimits",
           "create_app", "record_feedback", "render"]
