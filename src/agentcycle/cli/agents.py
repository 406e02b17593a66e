"""`agentcycle agent run KIND TASK`: run any kind of agent once and show its result."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from agentcycle.cli._common import (
    console,
    debug_enabled,
    friendly_errors,
    print_json,
    settings,
    stop_on_sigterm,
)
from agentcycle.errors import AgentcycleError

app = typer.Typer(help="Run agents: rag, tools, multi, workflow, or your own.",
                  no_args_is_help=True)

KIND_HELP = ("rag, tools, multi, workflow, an entry point of the agentcycle.agents group, "
             "or module:function (a factory(settings, options) returning an Agent)")


@app.command("run")
@friendly_errors
def run(
    kind: str = typer.Argument(..., help=KIND_HELP),
    task: str = typer.Argument(..., help="The question or task."),
    collection: str | None = typer.Option(None, "--collection", "-c",
                                          help="Default: the legal example's."),
    model: str | None = typer.Option(
        None, help="A model dir (served locally) or a name served at AGENTCYCLE_SERVER_URL "
                   "/ LITELLM_ENDPOINT. Default: the bundled model."),
    top_k: int = typer.Option(3, min=1, help="rag: passages retrieved."),
    keep_sentences: int | None = typer.Option(
        None, min=1, help="rag: cut the passages to their N sentences closest to the task."),
    max_tokens: int = typer.Option(128, min=1),
    max_steps: int = typer.Option(5, min=1, help="tools: model calls before giving up."),
    tool: list[str] = typer.Option([], "--tool", help="tools: a module:function to offer "
                                                      "besides the legal tools (repeatable)."),
    workers: int = typer.Option(2, min=1, help="multi: workers started in this process."),
    worker: str = typer.Option("rag", help="multi: what each worker is (rag or tools)."),
    max_iterations: int = typer.Option(2, min=1, help="workflow: review rounds."),
    as_json: bool = typer.Option(False, "--json", help="Print the AgentResult as JSON."),
) -> None:
    """Run an agent on one task. Exit 1 when the run failed (its error is shown)."""
    from agentcycle.session import AgentOptions, agent_session

    stop_on_sigterm()
    options = AgentOptions(collection=collection, model=model, top_k=top_k,
                           keep_sentences=keep_sentences, max_tokens=max_tokens,
                           max_steps=max_steps, tools=tool,
                           workers=workers, worker=worker, max_iterations=max_iterations)
    with agent_session(settings(), kind, options) as session:
        try:
            result = session.agent.run(task)
        except AgentcycleError:
            raise
        except Exception as exc:  # a bug in the agent (often a user's): one line, not a trace
            if debug_enabled():
                raise
            raise AgentcycleError(f"the agent '{kind}' raised {type(exc).__name__}: {exc} "
                                  "(AGENTCYCLE_DEBUG=1 shows the traceback)") from None
    if as_json:
        print_json(result.model_dump(mode="json"))
    else:
        show(result)
    if result.status == "failed":
        raise typer.Exit(1)


def show(result) -> None:
    # Model and tool text is printed with its brackets escaped: Rich would drop "[name]"
    # and raise on "[/x]".
    console.print(escape(result.answer) if result.answer else "[dim](no answer)[/dim]",
                  highlight=False)
    if result.tool_calls:
        table = Table(title="tool calls", title_justify="left")
        for column in ("tool", "arguments", "result", "ms"):
            table.add_column(column, overflow="fold")
        for call in result.tool_calls:
            outcome = (f"[red]{escape(call.error)}[/red]" if call.error
                       else escape(_short(call.result)))
            table.add_row(escape(call.name), escape(_short(call.arguments)), outcome,
                          f"{call.latency_ms:.0f}")
        console.print(table)
    if result.sources:
        console.print("[bold]Sources[/bold]")
        for i, source in enumerate(result.sources, start=1):
            console.print(f"  [{i}] {source.source} {source.heading}", highlight=False,
                          markup=False)
    if result.status != "completed":
        thread = result.metadata.get("thread_id")
        console.print(f"[yellow]status: {result.status}[/yellow]"
                      + (f" thread {thread}" if thread else "")
                      + (f": {escape(result.error)}" if result.error else ""), highlight=False)
    console.print(f"[dim]{result.kind} agent, {result.model or '-'} via "
                  f"{result.backend or '-'}, {len(result.steps)} steps, "
                  f"{result.latency_ms:.0f} ms, {result.prompt_tokens}+"
                  f"{result.completion_tokens} tokens, ${result.cost_usd:.6f}"
                  + (f", trace {result.trace_id}" if result.trace_id else "") + "[/dim]",
                  highlight=False)


def _short(value, limit: int = 60) -> str:
    import json

    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"
