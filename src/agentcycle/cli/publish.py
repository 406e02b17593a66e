"""`agentcycle publish`: send the runs MLflow missed while it was down (the outbox)."""

from __future__ import annotations

import typer
from rich.table import Table

from agentcycle.cli._common import console, friendly_errors, print_json, settings


@friendly_errors
def publish(
    as_json: bool = typer.Option(False, "--json", help="Print what was published as JSON."),
) -> None:
    """Publish the fine-tunes and eval runs kept on disk while MLflow was down; publishing
    twice never duplicates a run."""
    from agentcycle.errors import ServiceError
    from agentcycle.observe.outbox import pending, publish_pending

    config = settings()
    still_open = [e for e in pending(config) if e.get("state") == "open"]
    published = publish_pending(config)
    if as_json:
        print_json({"published": [p.__dict__ for p in published],
                    "open": [e["id"] for e in still_open]})
    else:
        if published:
            table = Table(title=f"published to {config.tracking_uri}")
            for column in ("run", "MLflow run", "result"):
                table.add_column(column)
            for p in published:
                table.add_row(p.origin or p.entry_id, p.run_id or "-", p.error or "published")
            console.print(table)
        else:
            console.print("nothing to publish: every finished run is in MLflow")
        if still_open:
            console.print(f"{len(still_open)} run(s) still going or stopped (resume them to "
                          "finish): " + ", ".join(e.get("origin") or e["id"]
                                                  for e in still_open), highlight=False)
    failed = [p for p in published if p.error]
    if failed:
        raise ServiceError(f"{len(failed)} of {len(published)} run(s) not published; "
                           f"{failed[0].origin or failed[0].entry_id}: {failed[0].error}")
