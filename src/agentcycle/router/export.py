"""The same backends and routes as a LiteLLM proxy `config.yaml` (for the platform's
LiteLLM): one model_list entry per backend, one per route (its first backend, with
the rest as fallbacks), keys as `os.environ/VAR` so no secret is written to the file.

LiteLLM's router has fallbacks, cooldowns, retries, timeouts and latency-based
routing; our budget, A/B, quality, tag and cost-ceiling policies have no equivalent
there and are listed in the file's header instead of being silently dropped.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from agentcycle.router.config import BackendConfig, RouterConfig

_LITELLM_EQUIVALENT = {"fallback", "timeout", "least_latency"}


def _params(spec: BackendConfig) -> dict[str, Any]:
    params: dict[str, Any] = {"model": spec.model}
    if spec.api_base:
        params["api_base"] = spec.api_base
    if spec.api_key_env:
        params["api_key"] = f"os.environ/{spec.api_key_env}"
    elif spec.api_base:
        params["api_key"] = "none"  # OpenAI-compatible servers want some key
    params["timeout"] = spec.timeout_s
    params["max_retries"] = spec.retries
    if spec.input_usd_per_1k is not None:
        params["input_cost_per_token"] = spec.input_usd_per_1k / 1000
    if spec.output_usd_per_1k is not None:
        params["output_cost_per_token"] = spec.output_usd_per_1k / 1000
    return params


def _entry(name: str, spec: BackendConfig) -> dict[str, Any]:
    entry: dict[str, Any] = {"model_name": name, "litellm_params": _params(spec)}
    info = {k: v for k, v in (("max_input_tokens", spec.context_window),) if v}
    if spec.tags:
        info["tags"] = list(spec.tags)
    if info:
        entry["model_info"] = info
    return entry


def _policy_names(items: list) -> list[str]:
    return [item if isinstance(item, str) else next(iter(item)) for item in items]


def litellm_config(config: RouterConfig) -> dict[str, Any]:
    """A LiteLLM proxy config as a dict (``to_yaml`` writes it with its header)."""
    model_list = [_entry(name, spec) for name, spec in config.backends.items()]
    fallbacks, latency = [], False
    for route_name in config.route_names():  # (no `routes:` is one `default` route)
        route = config.route(route_name)
        if "least_latency" in _policy_names(route.policies):
            # A LiteLLM model group: its latency-based routing picks within the group.
            latency = True
            model_list += [_entry(route_name, config.backends[b]) for b in route.backends]
            continue
        if route_name not in config.backends:
            model_list.append(_entry(route_name, config.backends[route.backends[0]]))
        if len(route.backends) > 1:
            fallbacks.append({route_name: list(route.backends[1:])})
    settings: dict[str, Any] = {
        "routing_strategy": "latency-based-routing" if latency else "simple-shuffle",
        "cooldown_time": config.cooldown_s, "allowed_fails": 0, "num_retries": 0}
    if fallbacks:
        settings["fallbacks"] = fallbacks
        # A copy: shared lists would be written as YAML anchors (&id001 / *id001).
        settings["context_window_fallbacks"] = copy.deepcopy(fallbacks)
    exported: dict[str, Any] = {"model_list": model_list, "router_settings": settings}
    if config.proxy_key_env:
        exported["general_settings"] = {"master_key": f"os.environ/{config.proxy_key_env}"}
    return exported


def unsupported_policies(config: RouterConfig) -> dict[str, list[str]]:
    found = {}
    for route_name in config.routes:
        names = _policy_names(config.route(route_name).policies)
        if missing := [n for n in names if n not in _LITELLM_EQUIVALENT]:
            found[route_name] = missing
    return found


def to_yaml(config: RouterConfig) -> str:
    header = [f"# LiteLLM proxy config exported by `agentcycle router export-litellm` "
              f"from {config.source or 'a router config'}"]
    for route, names in unsupported_policies(config).items():
        header.append(f"# route {route}: no LiteLLM equivalent for {', '.join(names)} "
                      "(only `agentcycle router serve` applies them)")
    body = yaml.safe_dump(litellm_config(config), sort_keys=False)
    return "\n".join(header) + "\n" + body
