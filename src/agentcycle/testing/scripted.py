"""``ScriptedModel``: a real OpenAI-compatible HTTP server answering from a script.

The server runs uvicorn in a thread on 127.0.0.1 and speaks the parts of the protocol
agents use: ``GET /v1/models``, ``POST /v1/chat/completions`` (JSON and SSE streaming,
text or ``tool_calls``, ``usage``), and ``GET /health``. Each request takes the next
scripted reply, or the reply a rule computes from the request; every request body is
recorded in :attr:`ScriptedModel.requests`.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentcycle.errors import ConfigError

MODEL_NAME = "scripted"


@dataclass(frozen=True)
class ToolCall:
    """The model asks for ``name(**arguments)``."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reply:
    """One scripted answer: text, tool calls, or an HTTP error (``status`` >= 400)."""

    content: str = ""
    tool_calls: Sequence[ToolCall] = ()
    status: int = 200
    delay_s: float = 0.0


Scripted = str | ToolCall | Sequence[ToolCall] | Reply
Rule = Callable[[dict[str, Any]], Scripted]


def as_reply(item: Scripted) -> Reply:
    if isinstance(item, Reply):
        return item
    if isinstance(item, str):
        return Reply(content=item)
    if isinstance(item, ToolCall):
        return Reply(tool_calls=(item,))
    if isinstance(item, Sequence) and all(isinstance(c, ToolCall) for c in item):
        return Reply(tool_calls=tuple(item))
    raise ConfigError(f"a scripted reply must be text, a ToolCall, a list of ToolCalls or "
                      f"a Reply, not {type(item).__name__}")


def last_user_text(request: dict[str, Any]) -> str:
    """The newest user message of a chat request (what rules usually look at)."""
    for message in reversed(request.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else json.dumps(content)
    return ""


class ScriptedModel:
    """A context manager serving ``replies`` in order (or ``rule(request)`` for each).

    ``default`` answers once the script runs out; without one, an extra request gets a
    500 whose message says the script is exhausted (a test that calls the model more
    often than it meant to fails loudly). ``base_url`` ends in ``/v1``: give it to
    ``Settings(server_url=...)`` or ``AGENTCYCLE_SERVER_URL``.
    """

    def __init__(self, replies: Iterable[Scripted] = (), *, rule: Rule | None = None,
                 default: Scripted | None = None, model: str = MODEL_NAME,
                 usage: tuple[int, int] | None = None, api_key: str | None = None):
        self._script: list[Reply] = [as_reply(r) for r in replies]
        self.rule, self.model = rule, model  # rule: may be set between steps
        self._default = as_reply(default) if default is not None else None
        self._usage, self._api_key = usage, api_key
        self._lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- the script ----------------------------------------------------------------
    @property
    def remaining(self) -> int:
        """Scripted replies not used yet."""
        return len(self._script)

    def reset(self) -> None:
        """Forget the script, the rule and the recorded requests (between tests)."""
        with self._lock:
            self._script.clear()
            self.requests.clear()
            self.rule = None

    def add(self, *replies: Scripted) -> None:
        """Append replies to the script (between two steps of a test)."""
        with self._lock:
            self._script.extend(as_reply(r) for r in replies)

    def _next(self, request: dict[str, Any]) -> Reply:
        with self._lock:
            self.requests.append(request)
            if self._script:
                return self._script.pop(0)
        if self.rule is not None:
            return as_reply(self.rule(request))
        if self._default is not None:
            return self._default
        return Reply(status=500, content=f"ScriptedModel: the script is exhausted (request "
                                         f"{len(self.requests)} had no reply)")

    # -- the server ----------------------------------------------------------------
    @property
    def base_url(self) -> str:
        if not self.port:
            raise RuntimeError("ScriptedModel is not running: use it as a context manager")
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> ScriptedModel:
        import uvicorn

        from agentcycle.serving.server import free_port

        self.port = free_port()
        config = uvicorn.Config(self._app(), host="127.0.0.1", port=self.port,
                                log_level="error", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True,
                                        name=f"scripted-model-{self.port}")
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                self.__exit__(None, None, None)
                raise RuntimeError(f"ScriptedModel did not start on port {self.port}")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def _app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse, Response, StreamingResponse
        from starlette.routing import Route

        async def models(request: Request) -> Response:
            return JSONResponse({"object": "list", "data": [
                {"id": self.model, "object": "model", "created": 0, "owned_by": "scripted"}]})

        async def health(request: Request) -> Response:
            return JSONResponse({"status": "ok"})

        async def chat(request: Request) -> Response:
            import asyncio

            if self._api_key and request.headers.get("authorization") != \
                    f"Bearer {self._api_key}":
                return _error(401, "invalid api key", "invalid_api_key")
            try:
                body = await request.json()
            except ValueError:
                return _error(400, "the body is not JSON", "invalid_json")
            reply = await asyncio.to_thread(self._next, body)
            if reply.delay_s:
                await asyncio.sleep(reply.delay_s)
            if reply.status >= 400:
                return _error(reply.status, reply.content or "scripted error", "scripted")
            usage = self._usage_of(body, reply)
            if body.get("stream"):
                return StreamingResponse(_stream(body, reply, usage),
                                         media_type="text/event-stream")
            return JSONResponse(_completion(body, reply, usage))

        return Starlette(routes=[
            Route("/v1/models", models), Route("/models", models),
            Route("/health", health),
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/chat/completions", chat, methods=["POST"])])

    def _usage_of(self, body: dict[str, Any], reply: Reply) -> dict[str, int]:
        if self._usage is not None:
            prompt, completion = self._usage
        else:  # words, roughly: enough for cost and budget code paths to see numbers
            prompt = sum(len(str(m.get("content") or "").split())
                         for m in body.get("messages") or []) or 1
            completion = len(reply.content.split()) + 8 * len(reply.tool_calls) or 1
        return {"prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt + completion}


def _error(status: int, text: str, code: str) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse({"error": {"message": text, "type": "invalid_request_error",
                                   "code": code}}, status_code=status)


def _calls(reply: Reply) -> list[dict[str, Any]]:
    return [{"id": f"call_{uuid.uuid4().hex[:12]}", "type": "function",
             "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
            for c in reply.tool_calls]


def _finish(reply: Reply) -> str:
    return "tool_calls" if reply.tool_calls else "stop"


def _completion(body: dict[str, Any], reply: Reply, usage: dict[str, int]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.content or None}
    if reply.tool_calls:
        message["tool_calls"] = _calls(reply)
    return {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion",
            "created": int(time.time()), "model": body.get("model") or MODEL_NAME,
            "choices": [{"index": 0, "message": message, "finish_reason": _finish(reply)}],
            "usage": usage}


def _stream(body: dict[str, Any], reply: Reply, usage: dict[str, int]) -> Iterator[str]:
    base = {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": body.get("model") or MODEL_NAME}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        data = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return f"data: {json.dumps(data)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    for i, word in enumerate(reply.content.split(" ") if reply.content else []):
        yield chunk({"content": word if i == 0 else " " + word})
    for index, call in enumerate(_calls(reply)):
        yield chunk({"tool_calls": [{"index": index, **call}]})
    yield chunk({}, _finish(reply))
    if (body.get("stream_options") or {}).get("include_usage"):
        yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n"
    yield "data: [DONE]\n\n"
