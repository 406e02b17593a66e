"""`agentcycle router ...`: serve the routing proxy, show stats, compare A/B arms."""

from __future__ import annotations

import typer

app = typer.Typer(help="Route model calls by cost, latency, quality and budget.",
                  no_args_is_help=True)
