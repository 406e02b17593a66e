"""OpenAI tool calls for models that write them as Hermes/Qwen text.

``transformers serve`` hands ``tools`` to the chat template and parses tool calls
only for model types it knows (Qwen, Gemma ...). A model like SmolLM2 (``llama``)
has a template that ignores ``tools`` and an output nobody parses, so clients with
``tools=`` got ``tool_calls=[]``. These pure functions close the loop in the gate:

* :func:`prepare_request` renders the tools into the system prompt the Hermes way
  (schemas inside ``<tools></tools>``, answer with ``<tool_call>{json}</tool_call>``)
  and the tool history as text the template can show: assistant ``tool_calls`` as
  their ``<tool_call>`` text, ``role: "tool"`` as ``<tool_response>`` in a user turn.
* :func:`rewrite_completion` turns ``<tool_call>`` text in a JSON response into
  ``message.tool_calls``; :class:`StreamRewriter` does the same for SSE chunks.

A call naming a tool that was not offered stays a tool call: the agent loop is the
one that can tell the model so ("unknown tool"), and hiding it as text would lose it.
"""

from __future__ import annotations

import contextlib
import copy
import json
import secrets
from typing import Any

from agentcycle._untrusted import fenced

OPEN, CLOSE = "<tool_call>", "</tool_call>"

_TOOLS_PROMPT = """# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{schemas}
</tools>

For each function call, return a json object with function name and arguments \
within <tool_call></tool_call> XML tags:
<tool_call>
{{"name": <function-name>, "arguments": <args-json-object>}}
</tool_call>"""


class ToolRequestError(ValueError):
    """The request's tools or tool_choice are malformed (the gate answers 400)."""


def template_knows_tools(chat_template: str | None) -> bool:
    """Whether a chat template renders ``tools`` itself (then the engine presents them)."""
    return bool(chat_template) and "tools" in chat_template


def offers_tools(payload: dict) -> bool:
    """The request presents tools to the model, so its answer may hold tool calls."""
    return bool(payload.get("tools")) and payload.get("tool_choice") != "none"


def needs_rewrite(payload: dict) -> bool:
    messages = payload.get("messages") or []
    return "tools" in payload or "tool_choice" in payload or any(
        isinstance(m, dict) and (m.get("role") == "tool" or m.get("tool_calls"))
        for m in messages)


def prepare_request(payload: dict) -> dict:
    """The request as a tool-unaware template can show it: tools in the system
    prompt, tool history as text, and no tool fields left for the engine."""
    body = {k: v for k, v in payload.items()
            if k not in ("tools", "tool_choice", "parallel_tool_calls")}
    messages = render_history(payload.get("messages") or [])
    prompt = tools_prompt(payload.get("tools") or [], payload.get("tool_choice"))
    if prompt:
        if messages and messages[0].get("role") == "system":
            messages[0] = {**messages[0],
                           "content": f"{_text(messages[0].get('content'))}\n\n{prompt}"}
        else:
            messages.insert(0, {"role": "system", "content": prompt})
    body["messages"] = messages
    return body


def tools_prompt(tools: list, tool_choice: Any = None) -> str:
    """The Hermes tool block, or "" when no tools are to be presented."""
    if not isinstance(tools, list) or not all(_tool_name(t) for t in tools):
        raise ToolRequestError("each entry of 'tools' must be "
                               '{"type": "function", "function": {"name": ...}}')
    if not tools or tool_choice == "none":
        return ""
    hint = ""
    if tool_choice == "required":
        hint = "\n\nYou must call at least one of these functions."
    elif isinstance(tool_choice, dict):
        name = (tool_choice.get("function") or {}).get("name")
        tools = [t for t in tools if _tool_name(t) == name]
        if not tools:  # OpenAI answers 400 here too
            raise ToolRequestError(f"tool_choice names '{name}', which is not in 'tools'")
        hint = f"\n\nYou must call the function {name}."
    elif tool_choice not in (None, "auto"):
        raise ToolRequestError(f"unknown tool_choice {tool_choice!r}: use none, auto, "
                               "required or a function")
    schemas = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
    return _TOOLS_PROMPT.format(schemas=schemas) + hint


def render_history(messages: list[dict]) -> list[dict]:
    """Assistant tool calls as ``<tool_call>`` text; consecutive tool results as one
    user turn of ``<tool_response>`` blocks (the Qwen 2.5 template's convention)."""
    out: list[dict] = []
    for message in messages:
        role = message.get("role")
        if role == "tool":
            # a result holding "</tool_response>" must not close its own fence
            block = fenced("tool_response", _text(message.get("content")))
            if out and out[-1].get("_tool_responses"):
                out[-1]["content"] += "\n" + block
            else:
                out.append({"role": "user", "content": block, "_tool_responses": True})
        elif role == "assistant" and message.get("tool_calls"):
            calls = [call_text(c) for c in message["tool_calls"]]
            text = _text(message.get("content"))
            rest = {k: v for k, v in message.items() if k not in ("tool_calls", "content")}
            out.append({**rest, "content": "\n".join(([text] if text else []) + calls)})
        else:
            out.append(copy.copy(message))
    for message in out:
        message.pop("_tool_responses", None)
    return out


def call_text(call: dict) -> str:
    """One OpenAI tool call as the model would have written it."""
    function = call.get("function") or {}
    arguments = function.get("arguments") or {}
    if isinstance(arguments, str):
        # Not JSON: shown as the string it is, the model sees what it sent.
        with contextlib.suppress(json.JSONDecodeError):
            arguments = json.loads(arguments)
    data = {"name": function.get("name"), "arguments": arguments}
    return f"{OPEN}\n{json.dumps(data, ensure_ascii=False)}\n{CLOSE}"


def parse_call(body: str) -> dict | None:
    """An OpenAI tool call from the JSON inside the tags, or None when it is not one.

    Tolerated: ``parameters`` for ``arguments``, arguments as a JSON string, the
    ``{"type": "function", "function": {...}}`` wrapping. Not tolerated: anything
    that is not JSON (it stays text: we do not invent calls)."""
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        return None
    if isinstance(data, dict) and isinstance(data.get("function"), dict):
        data = data["function"]
    if not isinstance(data, dict) or not isinstance(data.get("name"), str) \
            or not data["name"].strip():
        return None
    arguments = data.get("arguments", data.get("parameters"))
    if arguments is None:
        arguments = {}
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            return None
    if not isinstance(arguments, dict):
        return None
    return {"id": f"call_{secrets.token_hex(12)}", "type": "function",
            "function": {"name": data["name"].strip(),
                         "arguments": json.dumps(arguments, ensure_ascii=False)}}


class ToolCallParser:
    """Splits streamed text into plain text (str) and tool calls (dict), incrementally.

    Text that could be the start of ``<tool_call>`` is held back until the next piece
    decides it; trailing whitespace is held too, so the whitespace around calls can
    be dropped and the streamed text equals the non-streamed content."""

    def __init__(self) -> None:
        self._buf = ""
        self._space = ""
        self._in_call = False
        self._after_call = False
        self.calls = 0

    def feed(self, text: str) -> list[str | dict]:
        out: list[str | dict] = []
        self._buf += text
        while True:
            if self._in_call:
                end = self._buf.find(CLOSE)
                if end < 0:
                    return out
                body, self._buf = self._buf[:end], self._buf[end + len(CLOSE):]
                self._in_call = False
                self._call(body, OPEN + body + CLOSE, out)
                continue
            start = self._buf.find(OPEN)
            if start >= 0:
                self._text(self._buf[:start], out)
                self._buf, self._in_call = self._buf[start + len(OPEN):], True
                continue
            keep = _partial_tag(self._buf)
            self._text(self._buf[:len(self._buf) - keep], out)
            self._buf = self._buf[len(self._buf) - keep:]
            return out

    def finish(self) -> list[str | dict]:
        """The end of output: an unclosed call still counts if its JSON is whole."""
        out: list[str | dict] = []
        rest, self._buf = self._buf, ""
        if self._in_call:
            self._in_call = False
            self._call(rest, OPEN + rest, out)
        else:
            self._text(rest, out)
        if not self.calls and self._space:
            out.append(self._space)
        self._space = ""
        return out

    def _call(self, body: str, raw: str, out: list) -> None:
        call = parse_call(body)
        if call is None:
            self._text(raw, out)
            return
        self._space, self._after_call = "", True
        self.calls += 1
        out.append(call)

    def _text(self, text: str, out: list) -> None:
        text, self._space = self._space + text, ""
        if self._after_call:
            text = text.lstrip()
            self._after_call = not text
        solid = text.rstrip()
        self._space = text[len(solid):]
        if solid:
            out.append(solid)


def split_tool_calls(text: str) -> tuple[str | None, list[dict]]:
    """(remaining content or None, tool calls) of a whole output."""
    parser = ToolCallParser()
    items = parser.feed(text) + parser.finish()
    calls = [i for i in items if isinstance(i, dict)]
    if not calls:
        return text, []
    content = "".join(i for i in items if isinstance(i, str))
    return content or None, calls


def rewrite_completion(body: dict) -> dict:
    """A chat.completion whose ``<tool_call>`` text becomes ``message.tool_calls``."""
    for choice in body.get("choices") or []:
        message = choice.get("message") or {}
        content = message.get("content")
        if message.get("tool_calls") or not isinstance(content, str) or OPEN not in content:
            continue  # the engine parsed them already, or there are none
        content, calls = split_tool_calls(content)
        if calls:
            message["content"], message["tool_calls"] = content, calls
            choice["finish_reason"] = _finish_reason(choice.get("finish_reason"), bool(calls))
    return body


def _finish_reason(engine: str | None, has_calls: bool) -> str | None:
    """``tool_calls`` when calls were parsed, but ``length`` stays: a turn cut at
    max_tokens may have lost a call after the ones that closed, and the caller must be
    able to tell (OpenAI reports ``length`` for a cut turn too)."""
    if engine == "length" or not has_calls:
        return engine
    return "tool_calls"


class StreamRewriter:
    """Rewrites chat.completion.chunk dicts: ``delta.content`` that holds tool calls
    becomes ``delta.tool_calls`` chunks; everything else passes through."""

    def __init__(self) -> None:
        self._parsers: dict[int, ToolCallParser] = {}
        self._calls: dict[int, int] = {}  # per choice: the next tool_calls index
        self._envelope: dict = {}

    def chunk(self, data: dict) -> list[dict]:
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices:
            return [data]  # usage-only or error chunks
        self._envelope = {k: v for k, v in data.items() if k not in ("choices", "usage")}
        out: list[dict] = []
        for choice in choices:
            index = choice.get("index", 0)
            parser = self._parsers.setdefault(index, ToolCallParser())
            delta = dict(choice.get("delta") or {})
            content = delta.pop("content", None)
            items = parser.feed(content) if isinstance(content, str) else []
            finish = choice.get("finish_reason")
            if finish:
                items += parser.finish()
            if delta:  # role and other fields keep their own chunk, first
                out.append(self._make(index, delta))
            out += [self._item(index, item) for item in items]
            if finish:
                out.append(self._make(index, {}, _finish_reason(finish, parser.calls > 0)))
        if "usage" in data:  # on the last chunk, where it came (the engine's final chunk)
            if not out:
                out.append({**self._envelope, "choices": []})
            out[-1]["usage"] = data["usage"]
        return out

    def close(self) -> list[dict]:
        """The stream ended without a finish_reason: flush what is held back."""
        out = []
        for index, parser in self._parsers.items():
            out += [self._item(index, item) for item in parser.finish()]
        return out

    def _item(self, index: int, item: str | dict) -> dict:
        if isinstance(item, str):
            return self._make(index, {"content": item})
        number = self._calls[index] = self._calls.get(index, -1) + 1
        return self._make(index, {"tool_calls": [{"index": number, **item}]})

    def _make(self, index: int, delta: dict, finish: str | None = None) -> dict:
        return {**self._envelope, "choices": [
            {"index": index, "delta": delta, "finish_reason": finish}]}


def _partial_tag(text: str) -> int:
    """Length of the longest suffix of text that is a proper prefix of ``<tool_call>``."""
    for size in range(min(len(text), len(OPEN) - 1), 0, -1):
        if OPEN.startswith(text[-size:]):
            return size
    return 0


def _tool_name(tool: Any) -> str | None:
    function = tool.get("function") if isinstance(tool, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    return name if isinstance(name, str) and name else None


def _text(content: Any) -> str:
    """Message content as text: a string, or the text parts of a content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""
