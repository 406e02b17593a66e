"""`agentcycle workflow list|show|resume|approve|reject`: the workflow threads waiting for a
human, and the decisions that move them on."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import typer
from rich.markup import escape

from agentcycle.cli._common import console, friendly_errors, print_json, settings

app = typer.Typer(help="Agentic workflows: threads waiting for approval, and their decisions.",
                  no_args_is_help=True)

_JSON = typer.Option(False, "--json", help="Print JSON.")


@contextlib.contextmanager
def _agent(model: str | None = None, thread_id: str | None = None) -> Iterator[Any]:
    """The workflow agent over this data dir's store; a model only when resuming a thread
    that stopped before its approval (approve/reject never call one)."""
    from agentcycle.agents.workflow import WorkflowAgent

    config = settings()
    with WorkflowAgent(config) as agent:
        if thread_id is None or not agent.needs_model(thread_id):
            yield agent
            return
    from agentcycle.rag.session import local_backends
    from agentcycle.router import Router
    from agentcycle.router.backends import default_backends

    with local_backends(config, model) as primary:
        router = Router(default_backends(config, primary),
                        energy_usd_per_hour=config.energy_usd_per_hour)
        try:
            with WorkflowAgent(config, router) as agent:
                yield agent
        finally:
            router.close()


def _print_result(result: Any, as_json: bool) -> None:
    from agentcycle.errors import ServiceError

    if result.status == "failed":
        raise ServiceError(f"thread {result.metadata['thread_id']} stopped: {result.error} "
                           f"(its state is kept: agentcycle workflow resume "
                           f"{result.metadata['thread_id']})")
    if as_json:
        print_json(result.model_dump())
        return
    thread_id = result.metadata["thread_id"]
    console.print(f"thread [bold]{thread_id}[/bold]: {result.status}", highlight=False)
    if result.status == "interrupted":
        console.print(f"\n{result.metadata['draft']}\n", highlight=False, markup=False)
        for note in result.metadata.get("notes", []):
            console.print(f"  review: {note}", highlight=False, markup=False)
        console.print(f"[dim]agentcycle workflow approve {thread_id} [--text EDITED] | "
                      f"reject {thread_id} --reason WHY[/dim]", highlight=False)
    elif result.status == "completed":
        console.print(f"\n{result.answer}", highlight=False, markup=False)
    elif result.status == "rejected":
        console.print(f"reason: {result.metadata.get('reason', '')}", highlight=False,
                      markup=False)


@app.command("list")
@friendly_errors
def list_threads(as_json: bool = _JSON) -> None:
    """Every workflow thread in the store, with its status."""
    from rich.table import Table

    with _agent() as agent:
        threads = agent.threads()
    if as_json:
        print_json([{k: t.as_dict()[k] for k in ("thread_id", "task", "status", "created_at",
                                                  "next", "iterations")} for t in threads])
        return
    if not threads:
        console.print("no workflow threads yet")
        return
    table = Table()
    # The id is what approve/show take: it never folds or gets an ellipsis.
    table.add_column("thread", no_wrap=True, min_width=12)
    for column in ("status", "next", "revisions", "created", "task"):
        table.add_column(column)
    for t in threads:
        table.add_row(t.thread_id, t.status, ", ".join(t.next), str(t.iterations), t.created_at,
                      escape(t.task if len(t.task) <= 60 else t.task[:57] + "..."))
    console.print(table)


@app.command()
@friendly_errors
def show(thread_id: str = typer.Argument(..., help="The thread id."),
         as_json: bool = _JSON) -> None:
    """One thread: its status, draft, review notes, the nodes run and the outbox."""
    with _agent() as agent:
        info = agent.show(thread_id)
    if as_json:
        print_json(info.as_dict())
        return
    console.print(f"thread [bold]{info.thread_id}[/bold]: {info.status}"
                  + (f" (next: {', '.join(info.next)})" if info.next else ""), highlight=False)
    console.print(f"task: {info.task}", highlight=False, markup=False)
    console.print(f"revisions: {info.iterations}", highlight=False)
    if info.draft:
        console.print(f"draft:\n{info.draft}", highlight=False, markup=False)
    for note in info.notes:
        console.print(f"  review: {note}", highlight=False, markup=False)
    if info.reason:
        console.print(f"rejected: {info.reason}", highlight=False, markup=False)
    if info.outbox:
        console.print(f"outbox ({info.outbox['created_at']}):\n{info.outbox['answer']}",
                      highlight=False, markup=False)
    steps = ", ".join(f"{s['name']} {s['latency_ms']:.0f} ms" for s in info.steps)
    console.print(f"[dim]nodes: {steps}[/dim]", highlight=False)


@app.command()
@friendly_errors
def resume(thread_id: str = typer.Argument(..., help="The thread id."),
           model: str | None = typer.Option(
               None, help="The model for the remaining model calls (default: the local one)."),
           as_json: bool = _JSON) -> None:
    """Continue a thread that stopped before its approval (a crash, a failed model call)."""
    with _agent(model, thread_id) as agent:
        result = agent.resume(thread_id)
    _print_result(result, as_json)


@app.command()
@friendly_errors
def approve(thread_id: str = typer.Argument(..., help="The thread id."),
            text: str | None = typer.Option(
                None, "--text", help="Replace the draft with this text (an edit)."),
            as_json: bool = _JSON) -> None:
    """Approve the pending draft (or an edited text); the answer goes to the outbox."""
    with _agent() as agent:
        result = agent.approve(thread_id, text)
    _print_result(result, as_json)


@app.command()
@friendly_errors
def reject(thread_id: str = typer.Argument(..., help="The thread id."),
           reason: str = typer.Option(..., "--reason", help="Why the draft is rejected."),
           as_json: bool = _JSON) -> None:
    """Reject the pending draft, with a reason; nothing goes to the outbox."""
    with _agent() as agent:
        result = agent.reject(thread_id, reason)
    _print_result(result, as_json)
