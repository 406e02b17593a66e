"""Small real servers for tests: an OpenAI-compatible fake cloud provider (the one
thing that cannot run here) and an HTTP recorder, both on 127.0.0.1."""

from __future__ import annotations

import contextlib
import threading
import time

import uvicorn
from fastapi import FastAPI, Request

from agentcycle.serving.server import free_port


class BackgroundServer:
    """Runs an ASGI app with uvicorn in a thread."""

    def __init__(self, app):
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=5)


def fake_cloud_app(answer: str = "The deposit must be returned within 21 days (§ 7).",
                   model: str = "gpt-4o-mini", fail_with: int | None = None) -> FastAPI:
    """Speaks the OpenAI chat-completions protocol, like a cloud provider would."""
    app = FastAPI()
    app.state.requests = []

    @app.post("/v1/chat/completions")
    @app.post("/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        app.state.requests.append({"body": body, "auth": request.headers.get("authorization")})
        if fail_with:
            from fastapi.responses import JSONResponse

            return JSONResponse({"error": {"message": "rate limited", "type": "rate_limit"}},
                                status_code=fail_with)
        return {
            "id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": answer}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
        }

    return app


@contextlib.contextmanager
def dead_url():
    """A URL where nothing listens."""
    yield f"http://127.0.0.1:{free_port()}/v1"


def openai_fake_app(answer: str = "The deposit must be returned within 21 days.",
                    *, delay_s: float = 0.0, fail_with: int | None = None,
                    cut_after: int | None = None, max_prompt_chars: int | None = None,
                    usage: tuple[int, int] = (100, 20)) -> FastAPI:
    """An OpenAI-protocol backend with the behaviours a router must survive: JSON and
    SSE streaming, tool calls (when the request offers tools), a delay, an error status,
    a stream that breaks after ``cut_after`` chunks, a context window (``max_prompt_chars``
    -> OpenAI's 400 context_length_exceeded). ``app.state.requests`` records the bodies."""
    import asyncio
    import json

    from fastapi.responses import JSONResponse, StreamingResponse

    app = FastAPI()
    app.state.requests = []
    app.state.fail_with = fail_with

    def message(body: dict) -> dict:
        if body.get("tools"):
            name = body["tools"][0]["function"]["name"]
            return {"role": "assistant", "content": None, "tool_calls": [{
                "id": "call_1", "type": "function",
                "function": {"name": name, "arguments": json.dumps({"q": "deposit"})}}]}
        return {"role": "assistant", "content": answer}

    def error(status: int, text: str, code: str) -> JSONResponse:
        return JSONResponse({"error": {"message": text, "type": "invalid_request_error",
                                       "code": code}}, status_code=status)

    async def chunks(body: dict):
        words = answer.split(" ")
        for i, word in enumerate(words):
            if cut_after is not None and i == cut_after:
                raise RuntimeError("backend died mid-stream")  # uvicorn aborts the connection
            delta = {"content": word if i == 0 else " " + word}
            chunk = {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1,
                     "model": body.get("model"),
                     "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            yield f"data: {json.dumps(chunk)}\n\n"
            await asyncio.sleep(0)
        last = {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1,
                "model": body.get("model"),
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        yield f"data: {json.dumps(last)}\n\n"
        if (body.get("stream_options") or {}).get("include_usage"):
            tail = {**last, "choices": [], "usage": {
                "prompt_tokens": usage[0], "completion_tokens": usage[1],
                "total_tokens": sum(usage)}}
            yield f"data: {json.dumps(tail)}\n\n"
        yield "data: [DONE]\n\n"

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        app.state.requests.append(body)
        if delay_s:
            await asyncio.sleep(delay_s)
        if app.state.fail_with:
            return error(app.state.fail_with, "rate limited" if app.state.fail_with == 429
                         else "backend error", "rate_limit_exceeded")
        prompt = sum(len(str(m.get("content") or "")) for m in body["messages"])
        if max_prompt_chars is not None and prompt > max_prompt_chars:
            return error(400, "This model's maximum context length is exceeded",
                         "context_length_exceeded")
        if body.get("stream"):
            return StreamingResponse(chunks(body), media_type="text/event-stream")
        return {
            "id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model"),
            "choices": [{"index": 0, "finish_reason": "tool_calls" if body.get("tools")
                         else "stop", "message": message(body)}],
            "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1],
                      "total_tokens": sum(usage)},
        }

    return app



def chat_app(respond, usage: tuple[int, int] = (100, 20)) -> FastAPI:
    """OpenAI chat completions whose message is ``respond(body)`` (a dict: the assistant
    message, with ``tool_calls`` or ``content``, and optionally the ``finish_reason``), or
    a Response ``respond`` returns as it is (an error status). ``app.state.requests``
    records the bodies."""
    from fastapi.responses import Response

    app = FastAPI()
    app.state.requests = []

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        app.state.requests.append(body)
        message = respond(body)
        if isinstance(message, Response):
            return message
        message = dict(message)
        finish = message.pop("finish_reason", None) or (
            "tool_calls" if message.get("tool_calls") else "stop")
        return {"id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()),
                "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", **message},
                             "finish_reason": finish}],
                "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1],
                          "total_tokens": sum(usage)}}

    return app


def cli_run(*args) -> tuple[int, str]:
    """`agentcycle ARGS` in this process: (exit code, output)."""
    from typer.testing import CliRunner

    from agentcycle.cli.main import app

    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def assert_clean_error(code: int, output: str, *fragments: str) -> None:
    """Bad input's contract: exit 1, one `error:` line, no traceback."""
    assert code == 1, output
    assert "Traceback" not in output and output.strip().startswith("error:"), output
    for fragment in fragments:
        assert fragment in output, output


def lookup_then_answer(body: dict) -> dict:
    """A scripted model for a one-tool agent: call ``lookup``, then answer from its result."""
    if any(m.get("role") == "tool" for m in body["messages"]):
        return {"content": "The deposit is returned within 21 days."}
    return {"tool_calls": [{"id": "call_1", "type": "function", "function": {
        "name": "lookup", "arguments": '{"term": "deposit"}'}}]}
