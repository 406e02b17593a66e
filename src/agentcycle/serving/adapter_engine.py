"""The CPU engine for unmerged LoRA adapters: one base model, PEFT adapters by name.

Run as ``python -m agentcycle.serving.adapter_engine BASE --port N --base-name base
--adapter legal=PATH ...`` (the gate starts it on a private port and stands in front of
it, as it does for ``transformers serve``). It answers OpenAI ``/v1/chat/completions``
(JSON and SSE, ``logprobs``/``top_logprobs`` included), ``/v1/models`` and ``/health``.

The base is loaded once; ``load_adapter`` adds each adapter's few MB. Requests run one at
a time under a lock, each selecting its adapter (``set_adapter``) or none
(``disable_adapter``): the adapter is model-wide state in PEFT, and on a CPU one
generation already uses every core.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from agentcycle._http import (
    EXCEPTION_HANDLERS,
    BodyRefused,
    loads,
    openai_error_response,
    read_body,
)


class AdapterEngine:
    """The base model with its adapters, generating for one model name at a time."""

    def __init__(self, base_dir: str | Path, adapters: dict[str, Path], base_name: str = "base"):
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.base_name = base_name
        self.tokenizer = AutoTokenizer.from_pretrained(base_dir)
        # float32: the 135M model is small, and the unmerged answer then equals the
        # merged model's to float rounding (bf16 would not).
        model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        for i, (name, path) in enumerate(adapters.items()):
            if i == 0:
                model = PeftModel.from_pretrained(model, str(path), adapter_name=name)
            else:
                model.load_adapter(str(path), adapter_name=name)
        self.model = model.eval()
        self.names = [base_name, *adapters]
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def using(self, name: str):
        """Hold the engine with ``name``'s adapter active (none for the base)."""
        with self._lock:
            if name == self.base_name:
                with (self.model.disable_adapter() if len(self.names) > 1
                      else contextlib.nullcontext()):
                    yield
            else:
                self.model.set_adapter(name)
                yield

    def prompt_ids(self, messages: list[dict]):
        plain = [{**m, "content": _text(m.get("content"))} for m in messages]
        return self.tokenizer.apply_chat_template(
            plain, add_generation_prompt=True, return_tensors="pt", return_dict=True)

    def generate_kwargs(self, body: dict) -> dict[str, Any]:
        temperature = float(body.get("temperature", 1.0) if body.get("temperature")
                            is not None else 1.0)
        kwargs: dict[str, Any] = {
            "max_new_tokens": int(body.get("max_tokens") or body.get("max_completion_tokens")
                                  or 256),
            "do_sample": temperature > 0,
            "pad_token_id": self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
        }
        if temperature > 0:
            kwargs.update(temperature=temperature, top_p=float(body.get("top_p") or 1.0))
        else:  # greedy: no sampling knobs, or transformers warns on each request
            kwargs.update(temperature=None, top_p=None, top_k=None)
        stop = body.get("stop")
        if stop:
            kwargs.update(stop_strings=[stop] if isinstance(stop, str) else list(stop),
                          tokenizer=self.tokenizer)
        return kwargs

    def complete(self, name: str, body: dict) -> dict:
        import torch

        inputs = self.prompt_ids(body["messages"])
        prompt_len = inputs["input_ids"].shape[1]
        kwargs = self.generate_kwargs(body)
        if body.get("seed") is not None:
            torch.manual_seed(int(body["seed"]))
        with self.using(name), torch.no_grad():
            out = self.model.generate(**inputs, **kwargs, output_logits=True,
                                      return_dict_in_generate=True)
        new = out.sequences[0, prompt_len:].tolist()
        text, finish = self._finish(new, kwargs)
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                  "finish_reason": finish, "logprobs": None}
        if body.get("logprobs"):
            choice["logprobs"] = {"content": self._logprobs(
                new, out.logits, int(body.get("top_logprobs") or 0))}
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
                "created": int(time.time()), "model": name, "choices": [choice],
                "usage": {"prompt_tokens": prompt_len, "completion_tokens": len(new),
                          "total_tokens": prompt_len + len(new)}}

    def _finish(self, new: list[int], kwargs: dict) -> tuple[str, str]:
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        for stop in kwargs.get("stop_strings") or []:
            if stop in text:  # OpenAI leaves the stop sequence out
                return text[: text.index(stop)], "stop"
        eos = self.model.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos])
        hit_eos = bool(new) and new[-1] in eos
        return text, "stop" if hit_eos or len(new) < kwargs["max_new_tokens"] else "length"

    def _logprobs(self, tokens: list[int], logits, top: int) -> list[dict]:
        import torch

        entries = []
        for token, step in zip(tokens, logits, strict=False):
            logp = torch.log_softmax(step[0].float(), -1)
            best = torch.topk(logp, top) if top else None
            entries.append({**self._token(token), "logprob": float(logp[token]),
                            "top_logprobs": [] if best is None else [
                                {**self._token(int(i)), "logprob": float(v)}
                                for v, i in zip(best.values, best.indices, strict=True)]})
        return entries

    def _token(self, token: int) -> dict:
        text = self.tokenizer.decode([token])
        return {"token": text, "bytes": list(text.encode())}

    def stream(self, name: str, body: dict) -> Iterator[bytes]:
        """SSE chunks as the tokens come; the lock is held until generation ends."""
        from transformers import TextIteratorStreamer

        inputs = self.prompt_ids(body["messages"])
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True,
                                        skip_special_tokens=True, timeout=600)
        kwargs = {**inputs, **self.generate_kwargs(body), "streamer": streamer}
        base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": name}

        def run() -> None:
            import torch

            with self.using(name), torch.no_grad():
                self.model.generate(**kwargs)

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        yield _sse({**base, "choices": [{"index": 0, "delta": {"role": "assistant"},
                                         "finish_reason": None}]})
        for piece in streamer:
            if piece:
                yield _sse({**base, "choices": [{"index": 0, "delta": {"content": piece},
                                                 "finish_reason": None}]})
        worker.join()
        yield _sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        yield b"data: [DONE]\n\n"


def _sse(chunk: dict) -> bytes:
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def _text(content: Any) -> str:
    """OpenAI content parts -> the plain text a text-only chat template takes."""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _error(status: int, message: str, kind: str = "invalid_request_error") -> Response:
    return openai_error_response(status, message, status, kind)


def build_app(engine: AdapterEngine) -> Starlette:
    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def models(request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [
            {"id": n, "object": "model", "created": 0, "owned_by": "agentcycle"}
            for n in engine.names]})

    async def chat(request: Request):
        try:
            body = loads(await read_body(request.receive))
        except BodyRefused as exc:
            return exc.response()
        except ValueError:
            return _error(400, "the request body is not valid JSON")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str)
                for m in body["messages"]):
            return _error(400, "'messages' must be a list of objects, each with a 'role'")
        try:  # max_tokens "abc", temperature [], stop 5: the request's fault, not a 500
            if engine.generate_kwargs(body)["max_new_tokens"] < 1:
                raise ValueError("max_tokens must be at least 1")
        except (TypeError, ValueError, OverflowError) as exc:
            return _error(400, f"invalid sampling parameters: {exc}")
        name = body.get("model") or engine.base_name
        if not isinstance(name, str) or name not in engine.names:
            return _error(404, f"model '{name}' is not served here; use one of "
                          + ", ".join(f"'{n}'" for n in engine.names))
        if body.get("stream"):
            return StreamingResponse(engine.stream(name, body), media_type="text/event-stream")
        try:
            return JSONResponse(await run_in_threadpool(engine.complete, name, body))
        except ValueError as exc:  # generate()'s own argument checks (top_p 7 ...)
            return _error(400, f"the model refused the request: {exc}")

    return Starlette(routes=[Route("/health", health), Route("/v1/models", models),
                             Route("/v1/chat/completions", chat, methods=["POST"])],
                     exception_handlers=EXCEPTION_HANDLERS)


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    from agentcycle.serving.adapters import parse_adapter_options

    parser = argparse.ArgumentParser(prog="agentcycle-adapter-engine")
    parser.add_argument("base_dir")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--base-name", default="base")
    parser.add_argument("--adapter", action="append", default=[], metavar="NAME=PATH")
    args = parser.parse_args(argv)
    adapters = parse_adapter_options(args.adapter, args.base_name)
    engine = AdapterEngine(args.base_dir, adapters, args.base_name)
    uvicorn.run(build_app(engine), host=args.host, port=args.port, log_level="warning",
                timeout_graceful_shutdown=5)  # an open stream does not hold the stop up


if __name__ == "__main__":
    main()
