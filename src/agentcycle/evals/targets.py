"""Targets: what a suite is run against. Each turns a Case into an Output.

- ``OpenAITarget``: any OpenAI-compatible endpoint and model (our server, vLLM, LiteLLM);
- ``RouterTarget``: the agentcycle Router (fallbacks, cost accounting);
- ``CallableTarget``: a Python agent function (sync or async) returning text, a dict,
  an Output or a RAG ``Answer``;
- ``HttpAppTarget``: an agent app over HTTP (``POST /v1/ask``, see agentcycle.app).

Every target has a ``key``: the runner's output cache is keyed by it and the case input,
so it names everything that changes the answer (URL, model, prompt, parameters).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import importlib.util
import inspect
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import ValidationError

from agentcycle.agents import AgentResult, Step, ToolCallRecord
from agentcycle.evals._wire import Completion, JsonClient, first_error
from agentcycle.evals._wire import TargetError as TargetError  # re-exported
from agentcycle.evals._wire import TargetRefused as TargetRefused
from agentcycle.evals.types import Case, Context, Output, ToolCall

_SECTION = re.compile(r"§\s*\d+[a-z]?")


@runtime_checkable
class Target(Protocol):
    key: str

    async def run(self, case: Case) -> Output: ...


def digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class OpenAITarget:
    """A model behind an OpenAI-compatible ``/chat/completions`` endpoint."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *,
                 system_prompt: str | None = None, max_tokens: int = 256,
                 temperature: float = 0.0, tools: list[dict] | None = None,
                 timeout_s: float = 120.0):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key or "none"
        self.system_prompt = system_prompt
        self.params = {"max_tokens": max_tokens, "temperature": temperature,
                       **({"tools": tools} if tools else {})}
        self.key = f"openai:{self.base_url}#{model}:" + digest(system_prompt, self.params)[:16]
        self._http = JsonClient(timeout_s)

    def messages(self, case: Case) -> list[dict[str, Any]]:
        messages = ([{"role": "user", "content": case.input}] if isinstance(case.input, str)
                    else list(case.input))
        if self.system_prompt and messages[0].get("role") != "system":
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return messages

    async def run(self, case: Case) -> Output:
        started = time.perf_counter()
        data = await self._http.post(
            f"{self.base_url}/chat/completions",
            {"model": self.model, "messages": self.messages(case), **self.params},
            {"Authorization": f"Bearer {self.api_key}"})
        latency_ms = (time.perf_counter() - started) * 1000
        completion = Completion.read(self.base_url, data)
        prompt, generated = completion.tokens()
        model = completion.model_name(self.model)
        step = Step.model_call("chat completion", latency_ms=latency_ms, backend=model,
                               finish_reason=completion.finish_reason)
        return to_output(AgentResult(
            answer=completion.message.text(), kind="model", latency_ms=latency_ms,
            steps=[step], tool_calls=[_tool_call(t) for t in completion.tool_calls()],
            prompt_tokens=prompt, completion_tokens=generated,
            cost_usd=list_price(model, prompt, generated), model=model, backend=model))


def _tool_call(raw: dict) -> ToolCallRecord:
    """A tool call as the model asked for it (a model target runs no tool)."""
    function = raw.get("function") or {}
    arguments = function.get("arguments") or {}
    error = None
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments or "{}")
        except json.JSONDecodeError:
            arguments, error = {"_raw": arguments}, "the arguments are not valid JSON"
    if not isinstance(arguments, dict):
        arguments, error = {"_raw": arguments}, "the arguments are not a JSON object"
    return ToolCallRecord(id=raw.get("id") or "", name=function.get("name", ""),
                          arguments=arguments, error=error)


def list_price(model: str, prompt_tokens: int, completion_tokens: int) -> float:
    """Cost at LiteLLM's list price when the model is in its map, else 0 (a local model)."""
    price = _price_map().get(model.split("/", 1)[-1]) or {}
    return (prompt_tokens * float(price.get("input_cost_per_token") or 0)
            + completion_tokens * float(price.get("output_cost_per_token") or 0))


@functools.cache
def _price_map() -> dict[str, dict]:
    # LiteLLM's bundled price map, read as data: importing LiteLLM costs seconds.
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(spec.submodule_search_locations[0]) / "model_prices_and_context_window_backup.json"
    return json.loads(path.read_text()) if path.is_file() else {}


class RouterTarget:
    """The agentcycle Router: the case's messages through a route's fallback chain."""

    def __init__(self, router: Any, *, name: str = "router", route: str | None = None,
                 max_tokens: int = 256, temperature: float = 0.0,
                 system_prompt: str | None = None):
        self.router = router
        self.route = route
        self.params = {"max_tokens": max_tokens, "temperature": temperature}
        self.system_prompt = system_prompt
        backends = [(b.name, b.model, b.api_base) for b in getattr(router, "backends", [])]
        self.key = f"router:{name}:" + digest(backends, route, system_prompt, self.params)[:16]

    async def run(self, case: Case) -> Output:
        messages = OpenAITarget.messages(self, case)  # type: ignore[arg-type]
        params = {**self.params, **({"route": self.route} if self.route else {})}
        if hasattr(self.router, "acomplete"):  # the async API, on this loop
            completion = await self.router.acomplete(messages, **params)
        else:
            completion = await asyncio.to_thread(self.router.complete, messages, **params)
        result = AgentResult(answer=completion.text, kind="model",
                             latency_ms=completion.latency_ms,
                             tool_calls=[_tool_call(t) for t in completion.tool_calls])
        result.add_usage(completion)
        return to_output(result)


class CallableTarget:
    """A Python agent function ``fn(question) -> str | dict | Output | Answer``.

    Sync functions run in worker threads, so the runner's concurrency applies to them.
    ``takes_case=True`` passes the whole Case instead of the question text.
    """

    def __init__(self, fn: Callable[..., Any], *, key: str | None = None,
                 takes_case: bool = False):
        self.fn = fn
        self.takes_case = takes_case
        self.key = key or f"python:{_qualified_name(fn)}:{_source_digest(fn)}"

    async def run(self, case: Case) -> Output:
        argument = case if self.takes_case else case.question
        started = time.perf_counter()
        if inspect.iscoroutinefunction(self.fn):
            result = await self.fn(argument)
        else:
            result = await asyncio.to_thread(self.fn, argument)
            if inspect.isawaitable(result):
                result = await result
        output = to_output(result)
        if not output.latency_ms:
            output.latency_ms = (time.perf_counter() - started) * 1000
        return output


class HttpAppTarget:
    """An agent app over HTTP: ``POST {url}/v1/ask {"question": ...}`` -> an Answer."""

    def __init__(self, url: str, *, timeout_s: float = 120.0, api_key: str | None = None):
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.key = f"app:{self.url}"
        self._http = JsonClient(timeout_s)

    async def run(self, case: Case) -> Output:
        started = time.perf_counter()
        data = await self._http.post(f"{self.url}/v1/ask", {"question": case.question},
                                     self.headers)
        output = to_output(data)
        output.latency_ms = output.latency_ms or (time.perf_counter() - started) * 1000
        return output


def to_output(result: Any) -> Output:
    """Whatever an agent returned -> an Output: the one converter the targets, the pytest
    plugin and the demo share. An :class:`AgentResult` (or its JSON, as the app serves it)
    keeps its sources as contexts, its tool calls with their results and errors, its steps,
    usage and error."""
    if isinstance(result, Output):
        return result
    if isinstance(result, str):
        return Output(text=result)
    if isinstance(result, dict) and "answer" in result and "text" not in result:
        try:
            result = AgentResult.model_validate(result)
        except ValidationError as exc:
            raise TargetError("the agent's result is not an AgentResult "
                              f"({first_error(exc)})") from None
    if isinstance(result, AgentResult):
        return _from_result(result)
    if hasattr(result, "model_dump"):  # any other pydantic model
        result = result.model_dump()
    if not isinstance(result, dict):
        raise TargetError(f"the agent returned {type(result).__name__}; return str, dict, "
                          "Output or AgentResult")
    try:
        return Output.model_validate(result)
    except ValidationError as exc:
        raise TargetError(f"the agent's result is not an Output ({first_error(exc)})") from None


def _from_result(result: Any) -> Output:
    return Output(
        text=result.answer.strip(),
        contexts=[Context(source=section_id(s.model_dump()), text=s.text)
                  for s in result.sources],
        tool_calls=[ToolCall(name=c.name, arguments=c.arguments, result=c.result,
                             error=c.error) for c in result.tool_calls],
        steps=max(1, sum(s.kind == "llm" for s in result.steps)),  # model calls taken
        truncated=any(s.cut_at_max_tokens for s in result.steps),
        latency_ms=result.latency_ms,
        prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
        cost_usd=result.cost_usd, model=result.backend or result.model,
        error=result.error if result.status == "failed" else None)


def section_id(source: dict[str, Any]) -> str:
    """'§ 8' from a heading like '§ 8. Deposit cap' (how the legal cases cite sources)."""
    match = _SECTION.search(source.get("heading") or "") or _SECTION.search(
        source.get("source") or "")
    return re.sub(r"§\s*", "§ ", match.group(0)) if match else source.get("source", "")


def _qualified_name(fn: Callable) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _source_digest(fn: Callable) -> str:
    # Editing the agent's file (its code, its prompt constants) must not hit answers
    # cached from the old version; what it imports is beyond this: use --no-cache.
    try:
        return digest(Path(inspect.getsourcefile(fn) or "").read_text(encoding="utf-8"))[:12]
    except (OSError, TypeError, UnicodeDecodeError):
        return "nosource"
