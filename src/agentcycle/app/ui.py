"""The Gradio chat UI at ``/ui``: the agent's answers with their tool calls, sources
and status. With API keys configured it asks for a login (user: the key's name,
password: the key) and counts each question against that key's rate and token budget."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from agentcycle.agents import Agent, AgentResult
from agentcycle.errors import AgentcycleError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from agentcycle.app.guard import Guard


def render(result: AgentResult) -> str:
    """An agent result as chat markdown: the answer, tool calls, sources, status."""
    parts = [result.answer or "_(no answer)_"]
    if result.tool_calls:
        parts.append("**Tool calls**\n" + "\n".join(
            f"- `{c.name}({_args(c.arguments)})`" + (f" failed: {c.error}" if c.error else "")
            for c in result.tool_calls))
    if result.sources:
        parts.append("**Sources**\n" + "\n".join(
            f"- {s.source} {s.heading}".rstrip() for s in result.sources))
    if result.status != "completed":
        thread = result.metadata.get("thread_id")
        parts.append(f"_status: {result.status}_" + (f" (thread `{thread}`)" if thread else "")
                     + (f": {result.error}" if result.error else ""))
    return "\n\n".join(parts)


def _args(arguments: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in arguments.items())


def mount_ui(app: FastAPI, agent: Agent, guard: Guard) -> None:
    import gradio as gr

    from agentcycle.app.policy import ANONYMOUS

    policy = guard.policy

    async def respond(message: str, history: list, request: gr.Request) -> str:
        name = getattr(request, "username", None) or ANONYMOUS
        if len(message) > policy.max_question_chars:
            return f"error: the question is longer than {policy.max_question_chars} characters"
        refusal = await guard.admit(name)
        if refusal is not None:
            return f"error: {refusal.message}"
        try:
            result = await asyncio.to_thread(agent.run, message)
        except AgentcycleError as exc:
            return f"error: {exc}"
        await guard.answered(name, result.total_tokens)
        return render(result)

    # Gradio finds the request argument by its type (annotations are strings here)
    respond.__annotations__["request"] = gr.Request

    def login(user: str, password: str) -> bool:
        return policy.identify(password) == user

    kind = getattr(agent, "kind", "agent")
    chat = gr.ChatInterface(respond, title=f"agentcycle {kind} agent",
                            description="Answers show the tool calls and sources behind them.")
    gr.mount_gradio_app(app, chat, path="/ui", auth=None if policy.open else login,
                        auth_message="Log in with an API key: its name, then the key.")
