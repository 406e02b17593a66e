"""What the HTTP targets read from a server they do not control: a bounded JSON body
and an OpenAI chat completion checked for shape. Whatever a server sends (HTML, a
truncated or 30 MB body, a list, ``"choices": "x"``), the case gets one readable error,
never a Python exception's text, and nothing unbounded is stored."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agentcycle.errors import ConfigError, ServiceError

# A chat answer, even with sources and steps, is kilobytes: a larger body is a broken or
# hostile server, and each answer is kept several times (journal, run, report, MLflow).
MAX_RESPONSE_BYTES = 2 * 1024 * 1024


class TargetError(ServiceError):
    """The target failed on one case (the runner retries, then marks the case errored)."""


class TargetRefused(ConfigError):
    """The target refuses every request (wrong key, URL or model): the run stops."""


def first_error(exc: ValidationError) -> str:
    """A pydantic error as one short line: where, and what was wrong."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "the body"
    return f"{where}: {error['msg']}"


def _message(body: str) -> str:
    """An error body's message (OpenAI's ``{"error": {"message"}}``), else its start."""
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError, RecursionError):
        return body[:200]
    message = error.get("message") if isinstance(error, dict) else error
    return str(message or body)[:200]


class JsonClient:
    """POST JSON, read a bounded JSON object back. One httpx client per event loop: a
    client must not outlive the loop it was made in."""

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        self._clients: dict[int, httpx.AsyncClient] = {}

    def client(self) -> httpx.AsyncClient:
        loop = id(asyncio.get_running_loop())
        if loop not in self._clients:
            limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
            self._clients[loop] = httpx.AsyncClient(timeout=self.timeout_s, limits=limits)
        return self._clients[loop]

    async def post(self, url: str, body: dict, headers: dict | None = None) -> dict:
        try:  # httpx times each read: a server trickling bytes needs a deadline of its own
            async with asyncio.timeout(self.timeout_s), self.client().stream(
                    "POST", url, json=body, headers=headers) as response:
                text = await _bounded_text(url, response)
        except httpx.HTTPError as exc:
            raise TargetError(f"{url}: {type(exc).__name__}: {exc}") from None
        except TimeoutError:
            raise TargetError(f"{url}: no complete response in {self.timeout_s:g} s") from None
        if response.status_code in (401, 403, 404):
            # A bad key, URL or model name fails every case alike: stop with that one
            # line rather than retry each case and report a run of errors.
            raise TargetRefused(f"{url}: HTTP {response.status_code}: {_message(text)}")
        if response.status_code >= 400:
            raise TargetError(f"{url}: HTTP {response.status_code}: {_message(text)}")
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            raise TargetError(f"{url}: the response is not JSON: {text[:80]!r}") from None
        if not isinstance(data, dict):
            raise TargetError(f"{url}: the response is a JSON {type(data).__name__}, "
                              "not an object")
        return data


async def _bounded_text(url: str, response: httpx.Response) -> str:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > MAX_RESPONSE_BYTES:
            raise TargetError(f"{url}: the response is larger than "
                              f"{MAX_RESPONSE_BYTES // 1024 // 1024} MiB; not read further")
    return body.decode("utf-8", errors="replace")


class _Function(BaseModel):
    name: str = ""
    arguments: str | dict | list | int | float | bool | None = None


class _ToolCall(BaseModel):
    id: str | None = None
    function: _Function = Field(default_factory=_Function)


class _Message(BaseModel):
    content: Any = None
    tool_calls: list[_ToolCall] | None = None

    @field_validator("content")
    @classmethod
    def _text_or_parts(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, str | list):
            raise ValueError("should be a string, a list of parts or null")
        return value

    def text(self) -> str:
        """The answer; content as a list of parts (some providers) joins its text parts."""
        if isinstance(self.content, list):
            return "".join(part.get("text") or "" for part in self.content
                           if isinstance(part, dict) and isinstance(part.get("text"), str))
        return self.content or ""


class _Choice(BaseModel):
    message: _Message
    finish_reason: Any = None  # read when it is a string, else ignored


def _count(value: Any) -> int:
    """A token count as a server reports it; nonsense counts as 0, not as a failed case
    (usage is bookkeeping: the answer is what is evaluated)."""
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError, OverflowError):
        return 0


class Completion(BaseModel):
    """The part of an OpenAI chat completion a target reads (extra fields ignored); the
    answer must have the right shape, bookkeeping fields are taken when they make sense."""

    model_config = ConfigDict(extra="ignore")
    choices: list[_Choice] = Field(min_length=1)
    usage: dict | None = None
    model: Any = None

    @classmethod
    def read(cls, url: str, data: dict) -> Completion:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise TargetError(f"{url}: not an OpenAI chat completion "
                              f"({first_error(exc)})") from None

    @property
    def message(self) -> _Message:
        return self.choices[0].message

    @property
    def finish_reason(self) -> str | None:
        reason = self.choices[0].finish_reason
        return reason if isinstance(reason, str) else None

    def tokens(self) -> tuple[int, int]:
        usage = self.usage or {}
        return _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))

    def model_name(self, default: str) -> str:
        return self.model if isinstance(self.model, str) and self.model else default

    def tool_calls(self) -> list[dict[str, Any]]:
        return [call.model_dump() for call in self.message.tool_calls or []]
