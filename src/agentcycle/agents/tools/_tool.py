"""A tool is a plain typed Python function: its JSON schema comes from the signature and
the docstring (first paragraph: the description; a Google-style ``Args:`` section: each
parameter's), and the model's arguments are validated against it before the call.

LangChain's ``StructuredTool`` does the signature and docstring parsing, so a LangChain
tool is accepted as it is.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agentcycle.errors import ConfigError


class ToolError(Exception):
    """A tool call that could not be made or failed: the message goes back to the model."""


@dataclass
class Tool:
    """A callable the model may call, with the schema it is offered under."""

    name: str
    description: str
    parameters: dict[str, Any]
    fn: Callable[..., Any]
    args_schema: Any  # a pydantic model class that validates the arguments
    timeout_s: float = 30.0

    @classmethod
    def from_function(cls, fn: Callable[..., Any], *, name: str | None = None,
                      description: str | None = None, timeout_s: float = 30.0) -> Tool:
        from langchain_core.tools import BaseTool, StructuredTool
        from langchain_core.utils.function_calling import convert_to_openai_tool

        if isinstance(fn, Tool):
            return fn
        if isinstance(fn, BaseTool):
            structured, target = fn, _langchain_callable(fn)
        elif callable(fn):
            try:
                structured = StructuredTool.from_function(
                    fn, name=name, description=description, parse_docstring=True,
                    error_on_invalid_docstring=False)
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"tool {getattr(fn, '__name__', fn)!r}: {exc}") from None
            target = fn
        else:
            raise ConfigError(f"a tool must be a function, not {type(fn).__name__}")
        spec = convert_to_openai_tool(structured)["function"]
        return cls(name=name or spec["name"], description=description or spec.get(
            "description", ""), parameters=spec.get("parameters") or {"type": "object",
                                                                      "properties": {}},
                   fn=target, args_schema=structured.args_schema, timeout_s=timeout_s)

    def openai_schema(self) -> dict[str, Any]:
        return {"type": "function", "function": {
            "name": self.name, "description": self.description, "parameters": self.parameters}}

    def validate(self, arguments: Any) -> dict[str, Any]:
        """The model's arguments (a JSON string or a dict), validated; ToolError if not."""
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments or "{}")
            except json.JSONDecodeError as exc:
                raise ToolError(f"the arguments for {self.name} are not valid JSON: "
                                f"{exc.msg}") from None
        if not isinstance(arguments, dict):
            raise ToolError(f"the arguments for {self.name} must be a JSON object")
        from pydantic import ValidationError

        try:
            validated = self.args_schema.model_validate(arguments)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}"
                                 for e in exc.errors())
            raise ToolError(f"invalid arguments for {self.name}: {problems}") from None
        # Only the arguments the caller gave (defaults stay the function's own).
        return {k: getattr(validated, k) for k in arguments if k in type(validated).model_fields}

    async def acall(self, arguments: dict[str, Any]) -> Any:
        """Call with validated arguments; raising or timing out becomes a ToolError."""
        try:
            if inspect.iscoroutinefunction(self.fn):
                return await asyncio.wait_for(self.fn(**arguments), self.timeout_s)
            return await asyncio.wait_for(asyncio.to_thread(self.fn, **arguments),
                                          self.timeout_s)
        except TimeoutError:
            raise ToolError(f"{self.name} timed out after {self.timeout_s:g} s") from None
        except Exception as exc:  # a tool's failure is reported, never crashes the run
            raise ToolError(f"{self.name} failed: {type(exc).__name__}: {exc}") from None


def tool(fn: Callable[..., Any] | None = None, *, name: str | None = None,
         description: str | None = None, timeout_s: float = 30.0) -> Any:
    """Decorate a function as a :class:`Tool` (``@tool`` or ``@tool(timeout_s=5)``)."""
    def wrap(function: Callable[..., Any]) -> Tool:
        return Tool.from_function(function, name=name, description=description,
                                  timeout_s=timeout_s)
    return wrap(fn) if fn is not None else wrap


def as_tools(items: list[Any]) -> dict[str, Tool]:
    """Functions, Tools or LangChain tools -> tools by name (a name given twice is an error)."""
    tools: dict[str, Tool] = {}
    for item in items:
        made = Tool.from_function(item)
        if made.name in tools:
            raise ConfigError(f"two tools are named '{made.name}'")
        tools[made.name] = made
    return tools


def _langchain_callable(lc_tool: Any) -> Callable[..., Any]:
    def call(**arguments: Any) -> Any:
        return lc_tool.invoke(arguments)
    return call
