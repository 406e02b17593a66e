"""An authenticating gate in front of ``transformers serve``.

Run as ``python -m agentcycle.serving.gate MODEL_DIR --port N --model-name NAME``: it
starts ``transformers serve`` pinned to the model on a private port, then forwards
every request to it after checking ``Authorization: Bearer <key>`` (the key comes from
``AGENTCYCLE_SERVE_API_KEY``) and rewriting the short model name to the engine's.
Responses, streamed ones included, pass through byte for byte, except for requests
that offer ``tools``: for models whose chat template ignores tools (SmolLM2), the gate
presents them in the prompt and turns the model's ``<tool_call>`` text into OpenAI
``tool_calls`` (:mod:`agentcycle.serving.toolcalls`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import sys
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from agentcycle._hardware import native_bf16
from agentcycle._http import (
    EXCEPTION_HANDLERS,
    MAX_BODY_BYTES,
    BodyRefused,
    loads,
    openai_error_response,
    read_body,
)
from agentcycle._processes import spawn, stop_tree
from agentcycle.serving import toolcalls

_HOP_HEADERS = {"host", "content-length", "connection", "transfer-encoding", "authorization"}


def _error(status: int, message: str, kind: str) -> Response:
    return openai_error_response(status, message, status, kind)


def build_gate(upstream: str, engine_model: str, model_name: str,
               api_key: str | None, *, render_tools: bool = True,
               models: dict[str, str] | None = None) -> Starlette:
    """``render_tools``: the gate presents tools and tool history in the prompt (for
    templates that do not); off, the engine's template gets them as they came.
    ``models``: every name served, to the engine's name for it (default: ``model_name``
    for ``engine_model``); a request without a model gets ``model_name``."""
    served = dict(models or {model_name: engine_model})
    client = httpx.AsyncClient(base_url=upstream, timeout=httpx.Timeout(600, connect=5))

    def authorized(request: Request) -> bool:
        if not api_key:
            return True
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        return secrets.compare_digest(given, api_key)

    async def health(request: Request) -> Response:
        try:
            upstream_health = await client.get("/health", timeout=5)
        except httpx.HTTPError as exc:  # the engine died: say so, not a 500
            return JSONResponse({"status": "unhealthy", "error": _engine_error(exc)}, 503)
        return Response(upstream_health.content, upstream_health.status_code,
                        media_type="application/json")

    async def models(request: Request) -> Response:
        if not authorized(request):
            return _error(401, "invalid or missing API key", "authentication_error")
        try:  # answered here, but only while the engine is up: /ready probes this
            engine = await client.get("/health", timeout=5)
        except httpx.HTTPError as exc:
            return _error(503, _engine_error(exc), "service_unavailable")
        if engine.status_code >= 500:
            return _error(503, f"the model engine behind the gate answers "
                          f"{engine.status_code}", "service_unavailable")
        return JSONResponse({"object": "list", "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "agentcycle"}
            for name in served]})

    async def forward(request: Request) -> Response:
        if not authorized(request):
            return _error(401, "invalid or missing API key", "authentication_error")
        try:
            body = await read_body(request.receive, MAX_BODY_BYTES)
        except BodyRefused as exc:
            return exc.response()
        tools_offered = False
        engine_name, shown = engine_model, model_name
        if not body and request.method == "POST":
            return _error(400, "the request body must be a JSON object", "invalid_request_error")
        if body:
            try:
                payload = loads(body)
            except ValueError:
                return _error(400, "the request body is not valid JSON", "invalid_request_error")
            problem = _malformed(payload, request.url.path)
            if problem:  # the engine answers these with a bare 500, the rewriting would too
                return _error(400, problem, "invalid_request_error")
            requested = payload.get("model") or model_name
            if not isinstance(requested, str):
                return _error(400, "'model' must be a string", "invalid_request_error")
            if requested in served:
                engine_name, shown = served[requested], requested
            elif requested in served.values():  # the engine's own name: shown as ours
                engine_name = requested
                shown = next(n for n, e in served.items() if e == requested)
            else:
                return _error(404, f"model '{requested}' is not served here; use "
                              + " or ".join(f"'{n}'" for n in served), "invalid_request_error")
            payload["model"] = engine_name
            if request.url.path.endswith("/chat/completions"):
                tools_offered = toolcalls.offers_tools(payload)
                if render_tools and toolcalls.needs_rewrite(payload):
                    try:
                        payload = toolcalls.prepare_request(payload)
                    except toolcalls.ToolRequestError as exc:
                        return _error(400, str(exc), "invalid_request_error")
            body = json.dumps(payload).encode()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        upstream_request = client.build_request(
            request.method, request.url.path, params=request.query_params,
            headers=headers, content=body)
        try:
            response = await client.send(upstream_request, stream=True)
        except httpx.HTTPError as exc:  # the engine died or hung up: a 503, not a 500
            return _error(503, _engine_error(exc), "service_unavailable")
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            stream = _tool_stream if tools_offered else _renamed_stream
            return StreamingResponse(stream(response, engine_name, shown),
                                     response.status_code, media_type="text/event-stream")
        content = await response.aread()
        await response.aclose()
        if response.status_code >= 400 and not _openai_error(content):
            # the engine's own 404/422 shapes, or a bare 500: OpenAI's, never a 500
            status = response.status_code if response.status_code < 500 else 502
            return _error(status, f"the model engine refused the request "
                          f"({response.status_code})", "invalid_request_error"
                          if status < 500 else "api_error")
        content = _rename(content, engine_name, shown)
        if tools_offered and response.status_code == 200:
            content = _with_tool_calls(content)
        return Response(content, response.status_code,
                        media_type=response.headers.get("content-type"))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        await client.aclose()

    return Starlette(routes=[
        Route("/health", health),
        Route("/v1/models", models),
        Route("/{path:path}", forward, methods=["GET", "POST", "DELETE"]),
    ], lifespan=lifespan, exception_handlers=EXCEPTION_HANDLERS)


def _openai_error(content: bytes) -> bool:
    try:
        return isinstance(loads(content).get("error"), dict)
    except (ValueError, AttributeError):
        return False


def _engine_error(exc: Exception) -> str:
    return f"the model engine behind the gate is not answering ({type(exc).__name__})"


def _malformed(payload: object, path: str) -> str | None:
    """What makes a request body unusable, in OpenAI's terms, or None."""
    if not isinstance(payload, dict):
        return "the request body must be a JSON object"
    if not path.endswith("/chat/completions"):
        return None
    messages = payload.get("messages")
    if not isinstance(messages, list) or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        return "'messages' must be a list of objects, each with a 'role'"
    for message in messages:
        content = message.get("content")
        if not (content is None or isinstance(content, str) or (isinstance(content, list)
                and all(isinstance(part, dict) for part in content))):
            return "a message's 'content' must be a string or a list of content parts"
        calls = message.get("tool_calls")
        if calls is not None and not (isinstance(calls, list) and all(
                isinstance(c, dict) and isinstance(c.get("function"), dict) for c in calls)):
            return "'tool_calls' must be a list of {\"type\": \"function\", \"function\": {...}}"
    return None


def _rename(content: bytes, engine_model: str, model_name: str) -> bytes:
    """Clients see the name they asked for, not the engine's pinned path."""
    return content.replace(json.dumps(engine_model).encode(), json.dumps(model_name).encode())


async def _renamed_stream(response: httpx.Response, engine_model: str, model_name: str):
    try:
        async for line in response.aiter_lines():
            yield _rename(line.encode(), engine_model, model_name) + b"\n"
    finally:
        await response.aclose()


def _with_tool_calls(content: bytes) -> bytes:
    try:
        data = json.loads(content)
    except json.JSONDecodeError:
        return content
    return json.dumps(toolcalls.rewrite_completion(data)).encode() if isinstance(
        data, dict) else content


def _sse(chunk: dict) -> bytes:
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


async def _tool_stream(response: httpx.Response, engine_model: str, model_name: str):
    """The SSE stream with ``<tool_call>`` text rewritten into ``delta.tool_calls``."""
    rewriter = toolcalls.StreamRewriter()
    try:
        async for line in response.aiter_lines():
            line = _rename(line.encode(), engine_model, model_name).decode()
            data = line[5:].strip() if line.startswith("data:") else None
            if data is None:
                if line:  # comments and event names pass; our chunks bring their own blank line
                    yield line.encode() + b"\n"
                continue
            if data == "[DONE]":
                for chunk in rewriter.close():
                    yield _sse(chunk)
                yield b"data: [DONE]\n\n"
                continue
            try:
                chunks = rewriter.chunk(json.loads(data))
            except (json.JSONDecodeError, AttributeError):
                yield line.encode() + b"\n\n"
                continue
            for chunk in chunks:
                yield _sse(chunk)
        for chunk in rewriter.close():
            yield _sse(chunk)
    finally:
        await response.aclose()


def chat_template(model_dir: str | Path) -> str | None:
    """The model directory's chat template text, if it has one."""
    folder = Path(model_dir)
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text()
    with contextlib.suppress(OSError, json.JSONDecodeError):
        template = json.loads((folder / "tokenizer_config.json").read_text()).get(
            "chat_template")
        # a list of named templates in older tokenizers: any of them may use tools
        return template if isinstance(template, str) or template is None else json.dumps(
            template)
    return None


def engine_options() -> list[str]:
    """Continuous batching with a bounded KV cache: left to size itself, the cache
    claims over half the machine's memory (13 GB for a 135M model here), and a second
    server or a training run beside it then starves. 64 blocks of 256 tokens hold 16
    concurrent requests of 1K tokens. At most 256 tokens per step: the engine's CPU
    attention covers every request's tokens in a step at once, so four ~1.9K-token
    prompts prefilled together took 2.2x as long as one after another (256: 1.04x; short
    prompts lose nothing; docs/benchmarks.md). bf16 where the CPU runs it natively (~30%
    faster here than fp32)."""
    options = ["--continuous-batching", "--cb-block-size", "256", "--cb-num-blocks", "64",
               "--cb-max-batch-tokens", "256"]
    return options + (["--dtype", "bfloat16"] if native_bf16() else [])


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    from agentcycle.serving.server import free_port

    parser = argparse.ArgumentParser(prog="agentcycle-gate")
    parser.add_argument("model_dir")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model-name", required=True)
    parser.add_argument("--parent-pid", type=int, default=None,
                        help="Stop (with the engine) when this process dies.")
    parser.add_argument("--adapter", action="append", default=[], metavar="NAME=PATH",
                        help="A LoRA adapter served unmerged as model NAME (repeatable).")
    args = parser.parse_args(argv)
    if args.parent_pid:
        _stop_with_parent(args.parent_pid)

    engine_port = free_port()
    served = None
    if args.adapter:  # transformers serve cannot share a base: our PEFT engine
        names = [args.model_name, *(a.partition("=")[0].strip() for a in args.adapter)]
        served = {name: name for name in names}
        command = [sys.executable, "-m", "agentcycle.serving.adapter_engine", args.model_dir,
                   "--port", str(engine_port), "--base-name", args.model_name,
                   *(f"--adapter={a}" for a in args.adapter)]
    else:
        command = [sys.executable, "-m", "transformers.cli.transformers", "serve",
                   args.model_dir, "--host", "127.0.0.1", "--port", str(engine_port),
                   *engine_options()]
    engine = spawn(command, new_session=False)  # in our group; dies with us
    from agentcycle.serving.server import wait_for_health

    wait_for_health(f"http://127.0.0.1:{engine_port}", process=engine)
    app = build_gate(f"http://127.0.0.1:{engine_port}", args.model_dir, args.model_name,
                     os.environ.get("AGENTCYCLE_SERVE_API_KEY") or None,
                     render_tools=not toolcalls.template_knows_tools(
                         chat_template(args.model_dir)), models=served)
    try:
        # a stream still open at SIGTERM gets 5 s, then the gate stops its engine
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning",
                    timeout_graceful_shutdown=5)
    finally:
        stop_tree(engine, grace=15)


def _stop_with_parent(parent_pid: int, every_s: float = 1.0) -> None:
    """A parent killed without cleanup (SIGKILL) must not leave the gate and its ~1 GB
    engine running. On Linux the kernel's parent-death signal (``_processes.spawn``)
    does it at once; this watch is the fallback elsewhere: when this process is
    re-parented, signal our whole process group (the gate and the engine)."""
    import signal
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(every_s)
        os.killpg(os.getpgid(0), signal.SIGTERM)  # uvicorn stops; the engine too
        time.sleep(10)
        os.killpg(os.getpgid(0), signal.SIGKILL)  # whatever ignored the SIGTERM

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


if __name__ == "__main__":
    main()
