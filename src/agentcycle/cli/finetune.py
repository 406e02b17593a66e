"""`agentcycle finetune`: train a model with one of the methods; a thin layer over
:func:`agentcycle.finetune.finetune`."""

from __future__ import annotations

from pathlib import Path

import typer

from agentcycle.cli._common import AnswerForm, console, friendly_errors, settings
from agentcycle.finetune.methods import METHODS

_METHODS = "|".join(METHODS)


@friendly_errors
def finetune(
    data: Path = typer.Argument(..., help="JSONL of chat messages or question/answer pairs "
                                          "(dpo: prompt/chosen/rejected pairs)."),
    out: Path = typer.Option(..., "--out", help="Where the merged model is written."),
    method: str = typer.Option("lora", help=f"{_METHODS} (docs/finetune.md)."),
    collection: str | None = typer.Option(
        None, help="Build Q&A prompts with context retrieved from this collection."),
    base_model: str | None = typer.Option(None, help="HF model dir or models:/NAME@ALIAS "
                                                     "(default: bundled)."),
    epochs: float = typer.Option(3.0),
    lr: float | None = typer.Option(None, help="Learning rate (default: 1e-3 for LoRA "
                                               "methods, 2e-5 full, 5e-5 dpo)."),
    rank: int = typer.Option(16, help="LoRA rank."),
    max_steps: int = typer.Option(-1, help="Stop after N steps (-1: run the epochs)."),
    top_layers: int = typer.Option(12, help="LoRA on the top N layers (0: all)."),
    top_k: int = typer.Option(1, help="Passages retrieved into each Q&A prompt (train with "
                                      "the top_k the agent will use)."),
    keep_sentences: int | None = typer.Option(
        None, min=1, help="Cut those passages to their N sentences closest to the question "
                          "(train with the agent's setting; the demo uses 2)."),
    save_steps: int = typer.Option(50, help="Checkpoint every N steps into OUT.partial/ "
                                            "(0: never)."),
    resume: bool = typer.Option(False, help="Continue from the last checkpoint in "
                                            "OUT.partial/ (same data, model and settings)."),
    overwrite: bool = typer.Option(False, help="Replace OUT (and an interrupted run's "
                                               "OUT.partial/) if it exists."),
    answer_form: AnswerForm = typer.Option(
        "short", help="quote: Q&A pairs with an `evidence` sentence train to quote it, "
                      "then state the fact (what the demo trains; docs/benchmarks.md)."),
) -> None:
    """Fine-tune (LoRA, QLoRA, full, DPO, Unsloth); params, loss and artifacts go to MLflow."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from agentcycle.finetune import TrainParams, read_jsonl
    from agentcycle.finetune import finetune as run_finetune
    from agentcycle.finetune.methods import check_method, default_learning_rate
    from agentcycle.finetune.train import check_output_dir, check_work_dir
    from agentcycle.models import chat_model_dir
    from agentcycle.models.bundled import check_model_dir
    from agentcycle.models.registry import resolve_model

    config = settings()
    check_method(method)
    params = TrainParams(epochs=epochs, learning_rate=lr or default_learning_rate(method),
                         rank=rank, max_steps=max_steps, top_layers=top_layers or None,
                         save_steps=save_steps)
    params.check()
    check_output_dir(out, overwrite)
    # Checked before any data is read or embedded: a wrong path is one line, at once.
    base = check_model_dir(resolve_model(base_model, config), "base model") \
        if base_model else chat_model_dir(config)
    from agentcycle.finetune.dataprep import with_answer_form

    records = with_answer_form(read_jsonl(data), answer_form.value)
    examples = _examples(config, records, data, method, collection, top_k, keep_sentences)
    check_work_dir(out, method, base, params, examples, resume, overwrite)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=console) as progress:
        task = progress.add_task(f"{method}: loading", total=None)
        result = run_finetune(
            examples, out, base, config, params, method=method, resume=resume,
            overwrite=overwrite,
            on_step=lambda s, t, loss: progress.update(
                task, completed=s, total=t,
                description=f"{method}, loss {loss:.3f}" if loss is not None else method))
    resumed = f", resumed at step {result.resumed_from}" if result.resumed_from else ""
    loss = f"{result.final_loss:.3f}" if result.final_loss is not None else "n/a"
    console.print(f"merged model: {result.model_dir} ({method}, {result.steps} steps{resumed}, "
                  f"final loss {loss}, {result.seconds:.0f} s); "
                  + (f"MLflow run {result.run_id}" if not result.mlflow_pending else
                     f"[yellow]MLflow at {config.tracking_uri} did not take the run[/yellow]: "
                     f"its params, metrics and artifacts are kept in {result.mlflow_pending}; "
                     "send them with `agentcycle publish`"), highlight=False, soft_wrap=True)


def _examples(config, records, data: Path, method: str, collection: str | None, top_k: int,
              keep_sentences: int | None):
    if method == "dpo":
        from agentcycle.finetune.methods.dpo import to_preferences

        return to_preferences(records, data)
    from agentcycle.finetune import to_examples

    retrieve = _retriever(config, collection, top_k, keep_sentences) if collection else None
    return to_examples(records, data, retrieve=retrieve)


def _retriever(config, collection: str, top_k: int, keep_sentences: int | None):
    from agentcycle.models import embedding_model_dir
    from agentcycle.rag import ChunkStore, Embedder, Retriever

    store = ChunkStore(config, collection).require()
    return Retriever(store, Embedder(embedding_model_dir(config)), top_k, keep_sentences)
