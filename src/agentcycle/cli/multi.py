"""`agentcycle multi worker|ask|dead`: multi-agent over NATS."""

from __future__ import annotations

import sys

import typer

from agentcycle.cli._common import console, friendly_errors, print_json, settings

app = typer.Typer(help="Multi-agent over NATS: workers, a coordinator, dead letters.",
                  no_args_is_help=True)

_POOL = typer.Option("default", help="The worker pool (queue group and work queue).")
_URL = typer.Option(None, help="NATS URL; default NATS_URL, or the embedded server.")


@app.command()
@friendly_errors
def worker(
    agent: str = typer.Option(..., help="module:function, file.py:function or an "
                                        "agentcycle.agents entry point: a factory(settings, "
                                        "options) returning an Agent (both optional)."),
    pool: str = _POOL,
    url: str | None = _URL,
    name: str | None = typer.Option(None, help="This worker's name in results and logs."),
    concurrency: int = typer.Option(1, min=1, help="Tasks served at once."),
    ack_wait: float = typer.Option(30.0, help="Seconds without a heartbeat before a task "
                                              "is redelivered to another worker."),
    max_deliver: int = typer.Option(3, min=1, help="Attempts before the dead-letter subject."),
    trace: bool = typer.Option(True, help="Record a span per task, joined to the caller's "
                                          "trace (MLflow)."),
) -> None:
    """Serve an agent as a worker of a pool until stopped (Ctrl-C, SIGTERM)."""
    import asyncio

    from agentcycle.agents.multi import QueueConfig, Worker
    from agentcycle.cli._common import stop_on_sigterm
    from agentcycle.messaging import nats_session
    from agentcycle.plugins import load_agent
    from agentcycle.session import AgentOptions

    stop_on_sigterm()
    config = QueueConfig(pool=pool, ack_wait=ack_wait, max_deliver=max_deliver)
    current = settings()
    served = load_agent(agent, current, AgentOptions())  # make(settings, options)

    def event(kind: str, task, deliveries: int) -> None:
        # One line per event, flushed: tests and log collectors follow this stream.
        sys.stdout.write(f"{kind} {task.id} delivery {deliveries}\n")
        sys.stdout.flush()

    try:
        with nats_session(current) if url is None else _given(url) as where:
            one = Worker(served, config, name=name, concurrency=concurrency, trace=trace,
                         settings=current, on_event=event)

            def ready() -> None:
                console.print(f"worker {one.name} serving pool '{pool}' on {where}",
                              highlight=False)
                sys.stdout.flush()

            asyncio.run(one.serve(where, ready=ready))
    finally:
        getattr(served, "close", lambda: None)()


@app.command()
@friendly_errors
def ask(
    task: str = typer.Argument(..., help="The task; several questions become subtasks."),
    pool: str = _POOL,
    url: str | None = _URL,
    mode: str = typer.Option("queue", help="queue (JetStream work queue) or request "
                                           "(request/reply)."),
    timeout: float = typer.Option(300.0, min=0.001, help="Seconds to wait for every subtask."),
    trace: bool = typer.Option(True, help="Record the run as an MLflow trace."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Split a task, let the pool's workers answer, print the merged answer."""
    from agentcycle.agents.multi import MultiAgent, QueueConfig

    agent = MultiAgent(settings(), config=QueueConfig(pool=pool), mode=mode, timeout=timeout,
                       url=url, trace=trace)
    result = agent.run(task)
    if as_json:
        print_json(result.model_dump(exclude={"sources": {"__all__": {"text"}}}))
    else:
        console.print(result.answer, highlight=False, markup=False)
        console.print(f"\n[dim]{len(result.metadata['subtasks'])} subtasks, workers "
                      f"{', '.join(result.metadata['workers']) or '-'}, trace "
                      f"{result.trace_id}[/dim]", highlight=False)
    if result.status == "failed":
        raise typer.Exit(1)


@app.command()
@friendly_errors
def dead(
    pool: str = _POOL,
    url: str | None = _URL,
    last: int = typer.Option(20, min=1, help="How many of the newest to show."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Tasks that failed every delivery, with their errors."""
    import asyncio

    from agentcycle.agents.multi import QueueConfig
    from agentcycle.agents.multi.protocol import read_dead_letters
    from agentcycle.messaging import connect, nats_url

    config = QueueConfig(pool=pool)

    async def read() -> list[dict]:
        nc = await connect(url or nats_url(settings()))
        try:
            return await read_dead_letters(nc.jetstream(), config, last)
        finally:
            await nc.close()

    letters = asyncio.run(read())
    if as_json:
        print_json(letters)
        return
    if not letters:
        console.print(f"no dead letters for pool '{pool}'")
    for letter in letters:
        console.print(f"{letter['task']['id']}  {letter['deliveries']} deliveries  "
                      f"{letter['error']}", highlight=False, markup=False)


class _given:
    """A URL given on the command line, as a context manager like nats_session."""

    def __init__(self, url: str):
        self.url = url

    def __enter__(self) -> str:
        return self.url

    def __exit__(self, *exc: object) -> None:
        return None
