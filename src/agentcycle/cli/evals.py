"""`agentcycle eval ...`: run a suite against a target, gate on it, compare two runs."""

from __future__ import annotations

import typer

app = typer.Typer(help="Test agents like software: suites, scorers, gates, comparisons.",
                  no_args_is_help=True)
