"""`agentcycle rag ingest|ask`."""

from __future__ import annotations

from pathlib import Path

import typer

from agentcycle.cli._common import console, friendly_errors, print_json, settings

app = typer.Typer(help="Prototype: a RAG agent over a folder of documents.", no_args_is_help=True)


@app.command()
@friendly_errors
def ingest(
    folder: Path = typer.Argument(..., help="A folder of .md / .txt files."),
    collection: str = typer.Option(..., "--collection", "-c", help="Qdrant collection name."),
    chunk_size: int = typer.Option(700, min=1, help="Characters per chunk."),
    overlap: int = typer.Option(120, min=0, help="Characters shared by neighbouring chunks."),
) -> None:
    """Chunk, embed and store a folder in a Qdrant collection (replacing it)."""
    from rich.progress import Progress

    from agentcycle.rag import ingest as run_ingest

    with Progress(console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task("embedding chunks", total=None)
        report = run_ingest(folder, collection, settings(), chunk_size=chunk_size,
                            overlap=overlap,
                            progress=lambda d, t: progress.update(task, completed=d, total=t))
    console.print(f"ingested {report.documents} documents as {report.chunks} chunks into "
                  f"'{report.collection}' ({report.location})")


@app.command()
@friendly_errors
def ask(
    question: str = typer.Argument(...),
    collection: str = typer.Option(..., "--collection", "-c"),
    model: str | None = typer.Option(
        None, help="A model name: served at AGENTCYCLE_SERVER_URL, or a LiteLLM model at "
                   "LITELLM_ENDPOINT. Default: the local model (started if needed)."),
    top_k: int = typer.Option(3, min=1, help="Chunks retrieved as context."),
    keep_sentences: int | None = typer.Option(
        None, min=1, help="Cut the chunks to their N sentences closest to the question."),
    max_tokens: int = typer.Option(128, min=1),
    as_json: bool = typer.Option(False, "--json", help="Print the answer as JSON."),
) -> None:
    """Answer a question from a collection, with citations."""
    from agentcycle.rag.session import agent_session

    with agent_session(settings(), collection, model=model, top_k=top_k,
                       keep_sentences=keep_sentences, max_tokens=max_tokens) as agent:
        answer = agent.ask(question)
    if as_json:
        print_json(answer.model_dump(exclude={"sources": {"__all__": {"text"}}}))
        return
    console.print(answer.answer, highlight=False, markup=False)
    console.print("\n[bold]Sources[/bold]")
    for i, source in enumerate(answer.sources, start=1):
        console.print(f"  [{i}] {source.source} {source.heading} (score {source.score:.2f})",
                      highlight=False, markup=False)
    console.print(f"[dim]{answer.model} via {answer.backend}, {answer.latency_ms:.0f} ms, "
                  f"{answer.prompt_tokens}+{answer.completion_tokens} tokens, "
                  f"${answer.cost_usd:.6f}[/dim]")
