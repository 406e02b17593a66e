"""Test helpers for agentcycle users: a scripted, OpenAI-compatible model server.

``ScriptedModel`` answers chat completions with scripted text or tool calls, so an
agent's unit tests run its real code (router, tools, graph, app) against a real HTTP
server on 127.0.0.1 without loading a model::

    with ScriptedModel([ToolCall("add_days", {"start": "2026-01-01", "days": 3}),
                        "It is 2026-01-04."]) as model:
        settings = Settings(server_url=model.base_url, home=tmp_path)
        ...
        assert model.requests[0]["tools"]
"""

from agentcycle.testing.scripted import Reply, Rule, ScriptedModel, ToolCall, last_user_text

__all__ = ["Reply", "Rule", "ScriptedModel", "ToolCall", "last_user_text"]
