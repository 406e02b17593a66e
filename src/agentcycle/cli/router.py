"""`agentcycle router ...`: serve the routing proxy, show stats, compare A/B arms."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from agentcycle.cli._common import console, friendly_errors, print_json, settings

app = typer.Typer(help="Route model calls by cost, latency, quality and budget.",
                  no_args_is_help=True)

CONFIG = typer.Option(..., "--config", "-c", help="The router YAML file.")
SINCE = typer.Option(None, help="Only requests since 30m, 2h, 7d or an ISO date.")
JSON = typer.Option(False, "--json", help="Print JSON instead of a table.")
DB_CONFIG = typer.Option(None, "--config", "-c", help="Read the db_path of this router config.")


def _db(config: Path | None) -> Path:
    """The accounting log: the config's db_path, else <AGENTCYCLE_HOME>/router.db."""
    if config is not None:
        from agentcycle.router.config import load_config

        path = load_config(config, require_keys=False).db_path
        if path:
            return Path(path)
    return settings().home.resolve() / "router.db"


@app.command()
@friendly_errors
def serve(
    config: Path = CONFIG,
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(4000),
) -> None:
    """Serve the OpenAI-compatible routing proxy (/v1/chat/completions) until Ctrl-C."""
    from agentcycle.router import Router, load_config
    from agentcycle.router.proxy import check_port
    from agentcycle.router.proxy import serve as serve_proxy

    check_port(host, port)  # before the banner: a taken port is one error line
    loaded = load_config(config)
    router = Router.from_config(loaded)
    key = os.environ.get(loaded.proxy_key_env) if loaded.proxy_key_env else None
    console.print(f"router proxy on http://{host}:{port}/v1 - routes: "
                  f"{', '.join(router.routes)}; backends: {', '.join(router.by_name)}"
                  + ("" if key else " (no key required)") + f"; state: {router.state.describe()}")
    serve_proxy(router, host=host, port=port, api_key=key)


@app.command()
@friendly_errors
def check(config: Path = CONFIG) -> None:
    """Validate a router config and print its routes."""
    from agentcycle.router import load_config
    from agentcycle.router.policies import build_policies

    loaded = load_config(config)
    table = Table(title=f"routes in {config}")
    for column in ("route", "backends", "policies"):
        table.add_column(column, overflow="fold")
    for name in loaded.route_names():
        route = loaded.route(name)
        policies = build_policies(route.policies, route.backends)
        table.add_row(name, " -> ".join(route.backends),
                      ", ".join(p.name for p in policies) or "fallback (default)")
    console.print(table)
    console.print(f"[green]ok[/green]: {len(loaded.backends)} backends, "
                  f"{len(loaded.route_names())} routes")


def _show(found: list, as_json: bool, title: str, columns: tuple[str, ...],
          cells: Callable[[Any], list[str]]) -> None:
    """Rows as JSON, or as a Rich table."""
    if as_json:
        print_json([row.as_dict() for row in found])
        return
    table = Table(title=title)
    for i, column in enumerate(columns):
        # Names fold and numbers stay whole, rather than "defau…" and "0.00…" when piped
        # (80 columns).
        table.add_column(column, overflow="fold", no_wrap=i >= 2, min_width=len(column),
                         justify="left" if i < 2 else "right")
    for row in found:
        table.add_row(*cells(row))
    console.print(table)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _cost(usd: float) -> str:
    return "0" if usd == 0 else f"{usd:.6f}"


@app.command()
@friendly_errors
def stats(as_json: bool = JSON, since: str | None = SINCE, config: Path | None = DB_CONFIG
          ) -> None:
    """Requests, errors, latency, tokens and cost by route and backend."""
    from agentcycle.router.reports import stats as compute

    _show(compute(_db(config), since), as_json, "router stats",
          ("route", "backend", "req", "err", "p50 ms", "p95 ms", "tok in", "tok out",
           "cost $"),
          lambda r: [r.route, r.backend, str(r.requests), str(r.errors), f"{r.p50_ms:.0f}",
                     f"{r.p95_ms:.0f}", str(r.prompt_tokens), str(r.completion_tokens),
                     _cost(r.cost_usd)])


@app.command("ab-report")
@friendly_errors
def ab_report(as_json: bool = JSON, since: str | None = SINCE,
              config: Path | None = DB_CONFIG) -> None:
    """Per A/B arm: requests, quality (feedback), cost, p50 latency, Welch's t-test."""
    from agentcycle.router.reports import ab_report as compute

    _show(compute(_db(config), since), as_json,
          "A/B arms (qual: mean feedback; p: Welch's t-test vs the first arm)",
          ("route", "arm", "n", "err", "rated", "qual", "p qual", "cost $", "p50 ms",
           "p lat"),
          lambda r: [r.route, r.arm, str(r.n), str(r.errors), str(r.rated),
                     _fmt(r.quality_mean, ".3f"), _fmt(r.quality_p_value, ".3g"),
                     _cost(r.cost_usd_mean), f"{r.p50_ms:.0f}",
                     _fmt(r.latency_p_value, ".3g")])


@app.command("export-litellm")
@friendly_errors
def export_litellm(
    config: Path = CONFIG,
    out: Path | None = typer.Option(None, "--out", "-o", help="Write here (default: stdout)."),
) -> None:
    """Write the same backends and routes as a LiteLLM proxy config.yaml."""
    import sys

    from agentcycle._files import atomic_write, check_outputs
    from agentcycle.errors import DataError
    from agentcycle.router import load_config
    from agentcycle.router.export import to_yaml

    if out is not None:
        check_outputs({"--config": config}, {"--out": out})
    text = to_yaml(load_config(config, require_keys=False))
    if out is None:
        sys.stdout.write(text)
        return
    try:  # written whole or not at all: never a half-written config for LiteLLM
        atomic_write(out, text)
    except OSError as exc:
        raise DataError(f"cannot write {out}: {exc.strerror or exc}") from None
    console.print(f"wrote {out}")


from agentcycle.cli.router_quality import quality_curve, train_quality  # noqa: E402

app.command("train-quality")(train_quality)
app.command("quality-curve")(quality_curve)
