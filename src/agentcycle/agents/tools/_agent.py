"""The tool-calling agent: a loop through the router in the OpenAI tool-call format.

The model is offered the tools; each tool call it makes is validated and run, and its
result (or its error: an unknown tool, bad arguments, a tool that raised or timed out)
goes back as a ``tool`` message, until the model answers without calling a tool or the
step limit is reached. Nothing a tool or the model does crashes the run: it is recorded
in the result.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from agentcycle._untrusted import DATA_RULE, defang
from agentcycle.agents._protocol import BaseAgent
from agentcycle.agents._result import AgentResult, Source, Step, ToolCallRecord, elapsed_ms
from agentcycle.agents.tools._tool import Tool, ToolError, as_tools
from agentcycle.observe.tracing import span
from agentcycle.settings import Settings

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant with tools. Call a tool when it helps answer the "
    "question; answer directly when no tool is needed. After a tool's result, answer "
    "briefly from it. " + DATA_RULE)


class ToolAgent(BaseAgent):
    """An agent whose model calls plain Python functions as tools."""

    kind = "tools"

    def __init__(self, router: Any, tools: list[Any], *, system_prompt: str | None = None,
                 max_steps: int = 5, max_tokens: int = 256, temperature: float = 0.0,
                 route: str | None = None, settings: Settings | None = None):
        self.router = router
        self.tools: dict[str, Tool] = as_tools(tools)
        self.system_prompt = system_prompt or DEFAULT_SYSTEM_PROMPT
        self.max_steps = max_steps
        self.params: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature,
                                       **({"route": route} if route else {})}
        self.settings = settings

    def run(self, task: str, **options: Any) -> AgentResult:
        # On the router's own loop: its pooled connections live there (see router._loop).
        return self.router.run_sync(self.arun(task, **options))

    async def arun(self, task: str, **options: Any) -> AgentResult:
        messages: list[dict[str, Any]] = [{"role": "system", "content": self.system_prompt},
                                          {"role": "user", "content": task}]
        result = AgentResult(answer="", kind=self.kind)
        started = time.perf_counter()
        with span("tool agent", "AGENT", inputs={"task": task},
                  attributes={"agentcycle.tools": sorted(self.tools)},
                  settings=self.settings) as root:
            result.trace_id = getattr(root, "trace_id", None)
            # a request's own max_tokens (the app bounds it) replaces the agent's
            params = {**self.params, **({"max_tokens": options["max_tokens"]}
                                        if options.get("max_tokens") else {})}
            await self._loop(messages, result, params)
            result.latency_ms = elapsed_ms(started)
            root.set_outputs({"answer": result.answer, "status": result.status,
                              "tool_calls": [c.name for c in result.tool_calls]})
            root.set_attributes({"agentcycle.backend": result.backend,
                                 "agentcycle.cost_usd": result.cost_usd})
            if result.error:  # the trace shows the failed run and why
                root.set_attributes({"agentcycle.error": result.error})
                root.set_status("ERROR")
        return result

    async def _loop(self, messages: list[dict[str, Any]], result: AgentResult,
                    params: dict[str, Any]) -> None:
        schemas = [t.openai_schema() for t in self.tools.values()]
        for step in range(1, self.max_steps + 1):
            try:
                completion = await self.router.acomplete(messages, tools=schemas, **params)
            except Exception as exc:  # every backend failed: recorded, not raised
                result.status, result.error = "failed", f"model call failed: {exc}"
                return
            result.add_usage(completion)
            calls = completion.tool_calls
            result.steps.append(Step.model_call(
                f"model call {step}", latency_ms=completion.latency_ms,
                backend=completion.backend, finish_reason=completion.finish_reason,
                tool_calls=len(calls)))
            if not calls:
                result.answer = completion.text.strip()
                return
            messages.append({"role": "assistant", "content": completion.text or None,
                             "tool_calls": [_normalized(c) for c in calls]})
            for call in calls:
                record = await self._call(call, result)
                messages.append({"role": "tool", "tool_call_id": record.id,
                                 "content": _tool_message(record)})
        result.status = "failed"
        result.error = (f"step limit reached: {self.max_steps} model calls without a final "
                        "answer")

    async def _call(self, call: dict[str, Any], result: AgentResult) -> ToolCallRecord:
        function = call.get("function") or {}
        name = str(function.get("name") or "")
        record = ToolCallRecord(id=call.get("id") or f"call_{uuid.uuid4().hex[:12]}",
                                name=name, arguments=_raw_arguments(function.get("arguments")))
        started = time.perf_counter()
        with span(f"tool {name or '?'}", "TOOL", inputs=record.arguments) as current:
            try:
                tool = self.tools.get(name)
                if tool is None:
                    raise ToolError(f"unknown tool '{name}'; the tools are: "
                                    f"{', '.join(sorted(self.tools))}")
                arguments = tool.validate(function.get("arguments") or {})
                record.arguments = arguments
                record.result = _jsonable(await tool.acall(arguments))
                result.sources.extend(_sources(record.result))
                current.set_outputs(record.result)
            except ToolError as exc:
                record.error = str(exc)
                current.set_attributes({"agentcycle.tool_error": record.error})
        record.latency_ms = elapsed_ms(started)
        result.tool_calls.append(record)
        result.steps.append(Step(kind="tool", name=name or "?", latency_ms=record.latency_ms,
                                 detail={"error": record.error} if record.error else {}))
        return record


def _normalized(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    arguments = function.get("arguments")
    return {"id": call.get("id") or "", "type": "function",
            "function": {"name": function.get("name") or "",
                         "arguments": arguments if isinstance(arguments, str)
                         else json.dumps(arguments or {})}}


def _raw_arguments(arguments: Any) -> dict[str, Any]:
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = json.loads(arguments or "{}")
    except (TypeError, json.JSONDecodeError):
        return {"_raw": str(arguments)}
    return parsed if isinstance(parsed, dict) else {"_raw": parsed}


def _tool_message(record: ToolCallRecord) -> str:
    """The ``tool`` message: data for the model, its fence tags made inert."""
    if record.error:
        return defang(json.dumps({"error": record.error}))
    return defang(record.result if isinstance(record.result, str)
                  else json.dumps(record.result))


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return json.loads(json.dumps(value, default=str))


def _sources(result: Any) -> list[Source]:
    """Passages a tool returned (dicts with a ``text``) become the run's cited sources."""
    items = result if isinstance(result, list) else [result]
    return [Source(source=str(i.get("source") or i.get("section") or ""),
                   heading=str(i.get("heading") or i.get("section") or ""),
                   score=float(i.get("score") or 0.0), text=str(i["text"]))
            for i in items if isinstance(i, dict) and isinstance(i.get("text"), str)]
