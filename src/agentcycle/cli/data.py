"""`agentcycle data ...`: build, check and split fine-tuning datasets (thin over dataprep)."""

from __future__ import annotations

from pathlib import Path

import typer

from agentcycle._files import check_outputs
from agentcycle.cli._common import console, friendly_errors, settings
from agentcycle.errors import DataError, first_line

app = typer.Typer(help="Build, check and split fine-tuning datasets.", no_args_is_help=True)

OUT = typer.Option(..., "--out", "-o", help="The JSONL file to write (atomically).")


def _done(collected_or_report, out: Path, what: str = "records") -> None:
    skipped = ", ".join(f"{n} {reason}" for reason, n in
                        sorted(collected_or_report.skipped.items())) or "none"
    console.print(f"wrote {len(collected_or_report.records)} {what} to {out} "
                  f"(skipped: {skipped})", highlight=False)


def _teacher_router(model: str, url: str | None):
    from agentcycle.router import Router
    from agentcycle.router.backends import Backend

    config = settings()
    if url:  # any OpenAI-compatible server
        backend = Backend("teacher", f"openai/{model}", api_base=url.rstrip("/"),
                          api_key=config.litellm_master_key or "none")
    elif config.litellm_endpoint:  # the platform's LiteLLM gateway
        backend = Backend("teacher", f"openai/{model}",
                          api_base=config.litellm_endpoint.rstrip("/"),
                          api_key=config.litellm_master_key or "none")
    else:  # a provider model through the LiteLLM SDK (its API key from the environment)
        backend = Backend("teacher", model)
    return Router([backend], log_path=False, tracing=False)


@app.command()
@friendly_errors
def generate(corpus_dir: Path = typer.Argument(..., help="Folder of .md/.txt documents."),
             out: Path = OUT,
             teacher: str | None = typer.Option(None, help="Teacher model (via LiteLLM when "
                                                "configured); omitted: the offline generator."),
             teacher_url: str | None = typer.Option(None, help="OpenAI-compatible base URL "
                                                    "serving the teacher."),
             per_passage: int = typer.Option(3, help="Questions per passage (teacher)."),
             answer_style: str = typer.Option("short", help="Offline answers: short|quote.")
             ) -> None:
    """Question/answer pairs from a corpus (offline rules, or a teacher model)."""
    from agentcycle.finetune.dataprep import generate_offline, generate_with_teacher, write_jsonl

    if teacher_url and not teacher:
        raise DataError("--teacher-url needs --teacher, the model to ask there")
    check_outputs({"the corpus": corpus_dir}, {"--out": out})
    if teacher:
        router = _teacher_router(teacher, teacher_url)
        try:
            report = generate_with_teacher(corpus_dir, router, per_passage=per_passage)
        finally:
            router.close()
    else:
        report = generate_offline(corpus_dir, answer_style=answer_style)
    write_jsonl(out, report.records, "question/answer pairs")
    _done(report, out, "question/answer pairs")


@app.command("from-traces")
@friendly_errors
def from_traces(out: Path = OUT,
                min_score: float | None = typer.Option(None, help="Keep runs with feedback "
                                                       "at least this (unscored runs dropped)."),
                router_log: Path | None = typer.Option(None, help="router.db whose feedback "
                                                       "scores the traced calls."),
                source: str = typer.Option("mlflow", help="mlflow|langfuse"),
                max_traces: int = typer.Option(1000, min=1, help="Newest traces read.")) -> None:
    """SFT examples from recorded agent runs, filtered by feedback."""
    from agentcycle.finetune.dataprep import from_langfuse, from_mlflow, write_jsonl

    check_outputs({"--router-log": router_log} if router_log else {}, {"--out": out})

    if source == "mlflow":
        collected = from_mlflow(settings(), min_score=min_score, router_log=router_log,
                                max_traces=max_traces)
    elif source == "langfuse":
        if min_score is not None:
            raise DataError("--min-score reads feedback from MLflow; Langfuse scores are "
                            "not read (use --source mlflow)")
        collected = from_langfuse(settings(), limit=max_traces)
    else:
        raise DataError(f"--source must be mlflow or langfuse, not '{source}'")
    write_jsonl(out, collected.records, f"examples (of {collected.seen} traces)")
    _done(collected, out, "examples")


@app.command("from-evals")
@friendly_errors
def from_evals(run_id: str = typer.Argument(..., help="An eval run id or run.json path."),
               out: Path = OUT,
               kind: str = typer.Option("sft", help="sft: passing cases' answers; dpo: "
                                        "failing cases (reference chosen, answer rejected)."),
               min_score: float | None = typer.Option(None, help="Passing = every score at "
                                                      "least this (default: the run's verdict)."),
               ) -> None:
    """SFT examples or DPO pairs from an eval run."""
    from agentcycle.evals.results import load_run, run_path
    from agentcycle.finetune.dataprep import dpo_from_eval, sft_from_eval, write_jsonl

    if kind not in ("sft", "dpo"):
        raise DataError(f"--kind must be sft or dpo, not '{kind}'")
    source = run_path(run_id, settings())
    check_outputs({"the eval run": source, "the run's folder": source.parent}, {"--out": out})
    run = load_run(source, settings())
    build = sft_from_eval if kind == "sft" else dpo_from_eval
    collected = build(run, min_score=min_score)
    what = "SFT examples" if kind == "sft" else "DPO pairs"
    write_jsonl(out, collected.records, f"{what} (of {collected.seen} cases)")
    _done(collected, out, what)


@app.command()
@friendly_errors
def validate(path: Path = typer.Argument(..., help="The JSONL dataset."),
             against: Path | None = typer.Option(None, help="A test file: report leakage."),
             card: bool = typer.Option(False, help="Write a dataset card beside the data."),
             tokenizer: Path | None = typer.Option(None, help="HF model dir: token lengths "
                                                   "and the label mask."),
             max_length: int = typer.Option(1024, min=1, help="Truncation length for the mask."),
             source: str = typer.Option("", help="Where the data came from (for the card)."),
             license: str = typer.Option("", help="The data's license (for the card).")) -> None:
    """Duplicates, lengths, malformed records, label mask, leakage; exit 1 if not ready."""
    from agentcycle.finetune.dataprep import report_tables, validate_dataset, write_card
    from agentcycle.finetune.dataprep.card import card_path

    if card:  # checked first: the tables are not worth printing before a failed card
        check_outputs({"the data": path, "--against": against or path},
                      {"the card": card_path(path)})
    embedder = None
    if against is not None:
        from agentcycle.models import bundled_embedding_dir
        from agentcycle.rag import Embedder

        embedder = Embedder(bundled_embedding_dir())
    loaded = None
    if tokenizer is not None:
        from transformers import AutoTokenizer

        if not tokenizer.is_dir():  # a folder, never a hub name to look up
            raise DataError(f"tokenizer folder not found: {tokenizer}")
        try:
            loaded = AutoTokenizer.from_pretrained(str(tokenizer), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot load a tokenizer from {tokenizer}: "
                            f"{first_line(exc)}") from None
    report = validate_dataset(path, loaded, against, embedder=embedder, max_length=max_length)
    for table in report_tables(report):
        console.print(table)
    if card:
        console.print(f"card: {write_card(report, source=source, license=license)}")
    if not report.ok:
        raise DataError(f"{path} is not ready to train: {len(report.problems)} problems, "
                        f"{len(report.leaks)} leaks")


@app.command()
@friendly_errors
def split(path: Path = typer.Argument(..., help="The JSONL dataset."),
          test_size: float = typer.Option(0.2, help="Fraction (0-1) or count for the test split."),
          by: str = typer.Option("fact", help="fact: a fact's records stay together; record."),
          seed: int = typer.Option(0, help="Shuffle seed."),
          train_out: Path | None = typer.Option(None, help="Default: NAME.train.jsonl."),
          test_out: Path | None = typer.Option(None, help="Default: NAME.test.jsonl.")) -> None:
    """Split into train and test with no fact (or question) on both sides."""
    from agentcycle.finetune.data import read_jsonl
    from agentcycle.finetune.dataprep import split_records, write_jsonl

    train_out = train_out or path.with_name(path.stem + ".train.jsonl")
    test_out = test_out or path.with_name(path.stem + ".test.jsonl")
    check_outputs({"the input": path}, {"--train-out": train_out, "--test-out": test_out})
    train, test = split_records(read_jsonl(path), test_size, by=by, seed=seed)
    write_jsonl(test_out, test)
    write_jsonl(train_out, train)
    console.print(f"wrote {len(train)} to {train_out} and {len(test)} to {test_out}",
                  highlight=False)


@app.command("tools")
@friendly_errors
def tools_data(spec: Path = typer.Argument(..., help="The tool-use template spec (YAML)."),
               out: Path = OUT, seed: int = typer.Option(0, help="Slot-filling seed.")) -> None:
    """Tool-use records (OpenAI fine-tuning format) from templates, run on the real tools."""
    from agentcycle.finetune.dataprep import write_jsonl
    from agentcycle.finetune.dataprep.toolcalls import (
        build_tool_dataset,
        load_tool_spec,
        spec_tools,
    )

    loaded = load_tool_spec(spec)
    records = build_tool_dataset(loaded, spec_tools(loaded, settings()), seed=seed)
    write_jsonl(out, records, "tool-use records")
    calls = sum(any(m.get("tool_calls") for m in r["messages"]) for r in records)
    console.print(f"wrote {len(records)} tool-use records to {out} ({calls} with calls, "
                  f"{len(records) - calls} without)", highlight=False)
