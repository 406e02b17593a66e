"""The router's YAML config: backends, routes and their policies.

Every error names the file, the line and the field (``agentcycle._yaml`` maps pydantic's
error location to the line). A policy is a built-in name, an entry point of the
``agentcycle.policies`` group, or a ``module:Class`` / ``file.py:Class`` reference (the
file beside this config).

    backends:
      tuned: {model: openai/legal-tuned, api_base: http://127.0.0.1:8001/v1, local: true}
      cloud: {model: gpt-4o-mini, api_key_env: OPENAI_API_KEY}
    routes:
      default:
        backends: [tuned, cloud]
        policies: [least_latency, {budget: {usd_per_day: 1.0}}, my_policies.py:PreferCloud]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agentcycle._yaml import YamlDoc, load_yaml, relevant_errors
from agentcycle.errors import ConfigError
from agentcycle.router.backends import Backend, Transport
from agentcycle.router.policies import POLICIES, PolicyOptionError, validate_policy

__all__ = ["BackendConfig", "PolicyOptionError", "RouteConfig", "RouterConfig",
           "load_config", "parse_config"]


class _Strict(BaseModel):
    # allow_inf_nan: a YAML .nan weight or .inf cooldown is a typo, never a setting
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class BackendConfig(_Strict):
    model: str = Field(min_length=1,
                       description="A LiteLLM model name, e.g. openai/base or gpt-4o-mini.")
    api_base: str | None = Field(None, pattern=r"^https?://[^\s/]+",
                                 description="An http(s) URL, e.g. http://127.0.0.1:8001/v1.")
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

    @model_validator(mode="after")
    def _each_backend_once(self) -> RouteConfig:
        twice = sorted({name for name in self.backends if self.backends.count(name) > 1})
        if twice:
            raise ValueError(f"backend {', '.join(twice)} listed twice in one route")
        return self


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
    return parse_config(text, str(path), require_keys=require_keys, base_dir=path.parent)


def parse_config(text: str, source: str = "<router config>", *,
                 require_keys: bool = True, base_dir: str | Path | None = None) -> RouterConfig:
    """Validate router YAML; ``base_dir`` (default: the working directory) is where a
    policy's ``file.py:Class`` is looked for (load_config gives the file's folder)."""
    doc = load_yaml(text, source)
    if not isinstance(doc.data, dict):
        raise ConfigError(f"{source}: a router config is a mapping with `backends:` and "
                          "`routes:`")
    try:
        config = RouterConfig.model_validate(doc.data)
    except ValidationError as exc:
        first = relevant_errors(exc.errors(), doc)[0]
        raise doc.error(first["loc"], first["msg"]) from None
    config.source = source
    _check_references(config, doc, require_keys, Path(base_dir or ".").resolve())
    return config


def _check_references(config: RouterConfig, doc: YamlDoc, require_keys: bool,
                      base_dir: Path) -> None:
    for name, spec in config.backends.items():
        if require_keys and spec.api_key_env and not os.environ.get(spec.api_key_env):
            raise doc.error(("backends", name, "api_key_env"),
                            f"the environment variable {spec.api_key_env} is not set")
    for route_name, route in config.routes.items():
        for i, backend in enumerate(route.backends):
            if backend not in config.backends:
                raise doc.error(("routes", route_name, "backends", i),
                                f"unknown backend '{backend}' (known: "
                                f"{', '.join(config.backends)})")
        for i, item in enumerate(route.policies):
            try:
                validate_policy(item, route.backends, base_dir).check_resources()
            except PolicyOptionError as exc:
                raise doc.error(("routes", route_name, "policies", i, *exc.loc),
                                exc.message) from None
            # A user's file.py:Class is found from the config's folder, wherever the
            # router is built from this config later.
            route.policies[i] = _anchor(item, base_dir)
    if require_keys and config.proxy_key_env and not os.environ.get(config.proxy_key_env):
        raise doc.error(("proxy_key_env",),
                        f"the environment variable {config.proxy_key_env} is not set")


def _anchor(item: str | dict[str, Any], base_dir: Path) -> str | dict[str, Any]:
    """The same entry with a relative ``file.py:Class`` made absolute from ``base_dir``."""
    name = next(iter(item)) if isinstance(item, dict) and len(item) == 1 else item
    if not isinstance(name, str) or name in POLICIES or ":" not in name:
        return item
    path, _, attr = name.rpartition(":")
    if not path.endswith(".py") or Path(path).expanduser().is_absolute():
        return item
    anchored = f"{base_dir / path}:{attr}"
    return {anchored: item[name]} if isinstance(item, dict) else anchored
