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
