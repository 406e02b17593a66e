"""The router's YAML config: backends, routes and their policies.

Every error names the file, the line and the field: pydantic's error location is
walked through the YAML node tree (``yaml.compose`` keeps each node's line).

    backends:
      tuned: {model: openai/legal-tuned, api_base: http://127.0.0.1:8001/v1, local: true}
      cloud: {model: gpt-4o-mini, api_key_env: OPENAI_API_KEY}
    routes:
      default:
        backends: [tuned, cloud]
        policies: [least_latency, {budget: {usd_per_day: 1.0}}]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agentcycle.errors import ConfigError
from agentcycle.router.backends import Backend, Transport

Loc = tuple[str | int, ...]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BackendConfig(_Strict):
    model: str = Field(description="A LiteLLM model name, e.g. openai/base or gpt-4o-mini.")
    api_base: str | None = None
    api_key_env: str | None = Field(None, description="The env var holding the API key.")
    input_usd_per_1k: float | None = Field(None, ge=0)
    output_usd_per_1k: float | None = Field(None, ge=0)
    context_window: int | None = Field(None, gt=0)
    tags: list[str] = []
    timeout_s: float = Field(60.0, gt=0)
    retries: int = Field(0, ge=0, le=10)
    local: bool = False
    transport: Transport = "litellm"

    @model_validator(mode="after")
    def _direct_needs_a_url(self) -> BackendConfig:
        if self.transport == "direct" and not self.api_base:
            raise ValueError("transport: direct needs an api_base (an OpenAI-compatible URL)")
        return self


class RouteConfig(_Strict):
    backends: list[str] = Field(min_length=1)
    # Each item: a policy name, or a one-key mapping {name: {option: value}}.
    policies: list[str | dict[str, Any]] = []


class RouterConfig(_Strict):
    backends: dict[str, BackendConfig] = Field(min_length=1)
    routes: dict[str, RouteConfig] = {}
    cooldown_s: float = Field(30.0, ge=0)
    energy_usd_per_hour: float = Field(0.0, ge=0)
    tracing: bool = True
    log: bool = Field(True, description="Record every request in the accounting DB.")
    db_path: str | None = Field(None, description="Default: <AGENTCYCLE_HOME>/router.db.")
    proxy_key_env: str | None = Field(None, description="Env var with the proxy's bearer key.")
    expose_backends: bool = Field(
        False, description="Accept a backend name as `model` (it skips the routes' policies, "
                           "budgets included).")
    source: str = Field("", exclude=True)

    def route_names(self) -> list[str]:
        """Routes as written; a config without routes gets one `default` over all backends."""
        return list(self.routes) or ["default"]

    def route(self, name: str) -> RouteConfig:
        if not self.routes and name == "default":
            return RouteConfig(backends=list(self.backends))
        return self.routes[name]

    def build_backends(self, resolve_keys: bool = True) -> dict[str, Backend]:
        return {name: _backend(name, spec, resolve_keys) for name, spec in self.backends.items()}


def _backend(name: str, spec: BackendConfig, resolve_keys: bool) -> Backend:
    key = os.environ.get(spec.api_key_env) if spec.api_key_env and resolve_keys else None
    return Backend(
        name=name, model=spec.model, api_base=spec.api_base,
        api_key=key or ("none" if spec.api_base else None), local=spec.local,
        input_usd_per_1k=spec.input_usd_per_1k, output_usd_per_1k=spec.output_usd_per_1k,
        timeout_s=spec.timeout_s, tags=list(spec.tags), context_window=spec.context_window,
        retries=spec.retries, transport=spec.transport,
    )


def load_config(path: str | Path, *, require_keys: bool = True) -> RouterConfig:
    """Read and validate a router YAML file; every problem is one ConfigError line.

    ``require_keys=False`` accepts unset key variables (exporting a LiteLLM config only
    names them).
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read router config {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read router config {path}: not UTF-8 text") from None
    return parse_config(text, str(path), require_keys=require_keys)


def parse_config(text: str, source: str = "<router config>", *,
                 require_keys: bool = True) -> RouterConfig:
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise ConfigError(f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a router config is a mapping with `backends:` and "
                          "`routes:`")
    errors = _Located(source, root)
    try:
        config = RouterConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise errors.at(first["loc"], first["msg"]) from None
    config.source = source
    _check_references(config, errors, require_keys)
    return config


def _check_references(config: RouterConfig, errors: _Located, require_keys: bool) -> None:
    from agentcycle.router.policies import validate_policy

    for name, spec in config.backends.items():
        if require_keys and spec.api_key_env and not os.environ.get(spec.api_key_env):
            raise errors.at(("backends", name, "api_key_env"),
                            f"the environment variable {spec.api_key_env} is not set")
    for route_name, route in config.routes.items():
        for i, backend in enumerate(route.backends):
            if backend not in config.backends:
                raise errors.at(("routes", route_name, "backends", i),
                                f"unknown backend '{backend}' (known: "
                                f"{', '.join(config.backends)})")
        for i, item in enumerate(route.policies):
            try:
                validate_policy(item, route.backends).check_resources()
            except PolicyOptionError as exc:
                raise errors.at(("routes", route_name, "policies", i, *exc.loc),
                                exc.message) from None
    if require_keys and config.proxy_key_env and not os.environ.get(config.proxy_key_env):
        raise errors.at(("proxy_key_env",),
                        f"the environment variable {config.proxy_key_env} is not set")


class PolicyOptionError(Exception):
    """A policy entry is wrong; ``loc`` is relative to the entry."""

    def __init__(self, loc: Loc, message: str):
        super().__init__(message)
        self.loc = loc
        self.message = message


class _Located:
    """Turns a location in the parsed data into `file:line: field: message`."""

    def __init__(self, source: str, root: yaml.Node | None):
        self.source = source
        self.root = root

    def at(self, loc: Loc, message: str) -> ConfigError:
        node, key, walked = self.root, None, list[str | int]()
        for part in loc:
            found = _child(node, part)
            if found is None:
                if isinstance(node, yaml.MappingNode):
                    walked.append(part)  # a missing key: name it, point at its parent's key
                    node = key or node
                break  # pydantic's own loc parts (union tags) have no node
            (key, node), walked = found, [*walked, part]
        line = f":{node.start_mark.line + 1}" if node is not None else ""
        field = ".".join(str(p) for p in (walked or loc))
        return ConfigError(f"{self.source}{line}: {field}: {message}")


def _child(node: yaml.Node | None, part: str | int) -> tuple[yaml.Node | None, yaml.Node] | None:
    """(the key node or None, the value node) of one step into the YAML tree."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == str(part):
                # A null value has no useful line of its own: point at the key.
                return key, (value if value.tag != "tag:yaml.org,2002:null" else key)
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        return None, node.value[part]
    return None
