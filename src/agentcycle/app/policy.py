"""What the agent app admits: API keys, per-key limits, request bounds, CORS.

Keys have names (``alice=k1,ci=k2``): the name, never the key, shows in traces
(``agentcycle.api_key`` tag), in ``GET /v1/stats`` and in the UI's login. With no key
the app is open: the CLI allows that on a loopback address only (with a warning) and
refuses to bind any other address without keys unless told ``--insecure``.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field, field_validator

from agentcycle.errors import ConfigError

if TYPE_CHECKING:
    from agentcycle.settings import Settings

ANONYMOUS = "anonymous"
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


class KeyLimits(BaseModel):
    """One key's own limits, overriding the policy's defaults (None: the default)."""

    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_day: int | None = Field(None, ge=1)


class AppPolicy(BaseModel):
    """The app's admission rules. ``AppPolicy()`` is open (no keys) with safe bounds."""

    api_keys: dict[str, str] = Field(default_factory=dict,
                                     description="key name -> key; empty: no key needed")
    requests_per_minute: int | None = Field(60, ge=1, description="per key (None: no limit)")
    tokens_per_day: int | None = Field(None, ge=1, description="per key, UTC day")
    limits: dict[str, KeyLimits] = Field(default_factory=dict,
                                         description="per key name: its own limits")
    max_body_bytes: int = Field(64 * 1024, ge=256)
    max_question_chars: int = Field(4000, ge=1)
    max_tokens: int = Field(1024, ge=1, description="the largest max_tokens a request asks")
    max_concurrency: int = Field(4, ge=1, description="agent runs at once")
    max_queue: int = Field(64, ge=0, description="requests waiting for a run slot")
    queue_timeout_s: float = Field(60.0, gt=0, description="longest wait for a slot")
    body_timeout_s: float = Field(30.0, gt=0, description=(
        "longest time a request body may take to arrive (a 408 after)"))
    cors_origins: list[str] = Field(default_factory=list, description="empty: CORS off")

    @field_validator("api_keys")
    @classmethod
    def _check_keys(cls, keys: dict[str, str]) -> dict[str, str]:
        seen: set[str] = set()
        for name, key in keys.items():
            if not _NAME.match(name) or name == ANONYMOUS:
                raise ValueError(f"key name '{name}' must be 1-64 letters, digits or _.@- "
                                 f"(and not '{ANONYMOUS}')")
            bare = " (a key given without name= is named by its place)" if re.fullmatch(
                r"key\d+", name) else ""
            if len(key) < 8:
                raise ValueError(f"the key named '{name}' is shorter than 8 characters{bare}")
            if re.search(r"""[\s"'{}\[\]]""", key):
                # a bearer token has none; a JSON or YAML file given as the keys file does
                raise ValueError(f"the key named '{name}' holds spaces, quotes or brackets"
                                 f"{bare}: keys are written name=key, one a line")
            if key in seen:
                raise ValueError(f"the key named '{name}' is also another name's key")
            seen.add(key)
        return keys

    @property
    def open(self) -> bool:
        """No key configured: anyone may call the app."""
        return not self.api_keys

    def identify(self, key: str | None) -> str | None:
        """The name of ``key`` (compared in constant time), or None when unknown."""
        if not key:
            return None
        found = None
        for name, expected in self.api_keys.items():
            if hmac.compare_digest(key.encode(), expected.encode()):
                found = name
        return found

    def rpm_for(self, name: str) -> int | None:
        own = self.limits.get(name)
        return own.requests_per_minute if own and own.requests_per_minute else \
            self.requests_per_minute

    def tokens_for(self, name: str) -> int | None:
        own = self.limits.get(name)
        return own.tokens_per_day if own and own.tokens_per_day else self.tokens_per_day

    def secrets(self) -> list[str]:
        return list(self.api_keys.values())

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: object) -> AppPolicy:
        """From ``AGENTCYCLE_API_KEYS`` (``name=key,...``) and/or the file named by
        ``AGENTCYCLE_API_KEYS_FILE`` (one ``name=key`` a line, ``#`` comments), the
        ``AGENTCYCLE_APP_*`` limits and ``AGENTCYCLE_CORS_ORIGINS`` (comma-separated)."""
        secret = settings.api_keys.get_secret_value() if settings.api_keys else ""
        keys = parse_keys(secret, "AGENTCYCLE_API_KEYS")
        if settings.api_keys_file:
            keys.update(read_keys_file(settings.api_keys_file))
        values: dict[str, object] = {
            "api_keys": keys,
            "requests_per_minute": settings.app_requests_per_minute,
            "tokens_per_day": settings.app_tokens_per_day,
            "max_body_bytes": settings.app_max_body_bytes,
            "max_concurrency": settings.app_max_concurrency,
            "cors_origins": [o.strip() for o in (settings.cors_origins or "").split(",")
                             if o.strip()],
        }
        values.update(overrides)
        try:
            return cls.model_validate(values)
        except ValueError as exc:
            raise ConfigError(f"app policy: {_first_error(exc)}") from None


def parse_keys(text: str, where: str) -> dict[str, str]:
    """``name=key`` items separated by commas or new lines; a bare key is named key1..."""
    keys: dict[str, str] = {}
    items = [item.strip() for item in re.split(r"[,\n]", text)]
    for number, item in enumerate((i for i in items if i and not i.startswith("#")), 1):
        name, sep, key = item.partition("=")
        name, key = (name.strip(), key.strip()) if sep else (f"key{number}", name.strip())
        if not key:
            raise ConfigError(f"{where}: the key named '{name}' is empty (write name=key)")
        if name in keys:
            raise ConfigError(f"{where}: the key name '{name}' appears twice")
        keys[name] = key
    return keys


def read_keys_file(path: Path) -> dict[str, str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the API keys file {path}: "
                          f"{getattr(exc, 'strerror', None) or exc}") from None
    return parse_keys(text, str(path))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        # never echo the input: it may be a key
        return f"{where}: {first.get('msg', '')}".removeprefix(": ").replace("Value error, ", "")
    return str(exc)
