"""The tool-calling agent: the model answers, calling the functions of ``tools.py`` when
they help (OpenAI tool calls; the local engine's Hermes ``<tool_call>`` text is turned
into the same). Each call is validated against the tool's schema, run, and its result
(or its error) goes back to the model, for at most ``max_steps`` rounds.

Edit freely: ``build_agent`` is what the app (``agentcycle app --agent``), the eval suite
(``--target agent:...``) and the tests call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from agentcycle.agents import ToolAgent
from agentcycle.plugins import load_tool
from agentcycle.rag.session import router_session
from agentcycle.session import AgentOptions, AgentSession, model_check
from agentcycle.settings import Settings

from .config import AppConfig
from .runtime import HeldAgent, hold, with_model
from .tools import tools

SYSTEM_PROMPT = (
    "You are the support assistant of Northwind Outfitters. Use search_docs to look up "
    "the handbook (returns, shipping, warranty), shipping_cost to price a parcel and "
    "days_between to count days between two dates. Answer in one or two sentences.")


@contextlib.contextmanager
def _session(settings: Settings, options: AgentOptions,
             config: AppConfig) -> Iterator[AgentSession]:
    offered = [*tools(config.docs_dir), *(load_tool(ref) for ref in options.tools)]
    with router_session(settings, options.model) as router:
        agent = ToolAgent(router, offered, system_prompt=SYSTEM_PROMPT,
                          max_steps=options.max_steps, max_tokens=options.max_tokens,
                          settings=settings)
        yield AgentSession(agent, {"model": model_check(router)})


def build_agent(settings: Settings | None = None,
                options: AgentOptions | None = None) -> HeldAgent:
    settings, config = settings or Settings(), AppConfig()
    return hold(_session(settings, with_model(options, config), config))
