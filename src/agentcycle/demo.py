"""The lifecycle on the legal example, end to end, composed from the phase packages.

ingest -> evaluate the base model with RAG on the test split -> fine-tune on the train
split -> serve the tuned model -> route the agent to it -> evaluate again -> report.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agentcycle.evals import CallableTarget, ScoreContext, Suite, load_suite, publish
from agentcycle.evals.runner import run_suite_sync
from agentcycle.examples import LEGAL_COLLECTION, legal_corpus_dir, legal_split
from agentcycle.finetune import LoraParams, finetune, read_jsonl, to_examples
from agentcycle.models import chat_model_dir, embedding_model_dir
from agentcycle.rag import Embedder, RagAgent, ingest
from agentcycle.report import ModelEval, write_report
from agentcycle.router import Router
from agentcycle.router.backends import cloud_backend, local_backend
from agentcycle.serving import ModelServer
from agentcycle.settings import Settings


@dataclass
class DemoOptions:
    test_limit: int | None = None  # evaluate on the first N test cases only
    train_limit: int | None = None
    params: LoraParams = field(
        default_factory=lambda: LoraParams(epochs=3.0, learning_rate=2e-3))
    concurrency: int = 8
    max_tokens: int = 48
    # One passage: the cited section ranks first for 75% of the test questions (88% in
    # the top 2), and a 135M model extracts far better from one passage than from two;
    # it also halves the tokens per training step (docs/benchmarks.md).
    top_k: int = 1


@dataclass
class DemoResult:
    summaries: list[ModelEval]
    report_dir: Path
    tuned_model_dir: Path
    finetune_run_id: str
    seconds: float


def run_demo(settings: Settings | None = None, options: DemoOptions | None = None,
             console: Console | None = None) -> DemoResult:
    settings = settings or Settings()
    options = options or DemoOptions()
    console = console or Console()
    started = time.perf_counter()
    out = settings.ensure_home() / "demo"
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    suite = load_suite(legal_suite_path()).limited(options.test_limit)
    test_cases = suite.cases
    train_records = read_jsonl(legal_split("train"))[: options.train_limit]
    key = secrets.token_urlsafe(16)  # the demo's servers refuse requests without it

    with _progress(console) as progress, contextlib.ExitStack() as stack:
        task = progress.add_task("prepare the bundled models", total=None)
        base_dir = chat_model_dir(settings)
        embedder = Embedder(embedding_model_dir(settings))
        progress.update(task, total=1, completed=1)

        task = progress.add_task("ingest the statute into Qdrant", total=None)
        ingest(legal_corpus_dir(), LEGAL_COLLECTION, settings, embedder=embedder,
               progress=lambda d, t: progress.update(task, completed=d, total=t))

        task = progress.add_task("serve the base model", total=1)
        base = stack.enter_context(ModelServer(base_dir, api_key=key, model_name="base",
                                               log_file=logs / "base-server.log"))
        progress.update(task, completed=1)
        base_backend = local_backend("base", base.base_url, base.model_name, key)
        base_agent = RagAgent(settings, LEGAL_COLLECTION, Router([base_backend]),
                              embedder=embedder, max_tokens=options.max_tokens,
                              top_k=options.top_k)
        context = ScoreContext(settings=settings, embedder=embedder)
        summaries = [_evaluate(progress, "evaluate base + RAG on the test split", base_agent,
                               suite, context, "base", options)]

        task = progress.add_task("fine-tune (LoRA) on the train split", total=None)
        examples = to_examples(train_records, legal_split("train"), retrieve=base_agent.retrieve)
        tuned = finetune(examples, out / "legal-tuned", base_dir, settings, options.params,
                         overwrite=True, run_name="demo-finetune",
                         on_step=lambda s, t, loss: progress.update(
                             task, completed=s, total=t,
                             description=f"fine-tune (LoRA) on the train split, loss "
                                         f"{loss if loss is not None else float('nan'):.3f}"))

        task = progress.add_task("serve the fine-tuned model", total=1)
        server = stack.enter_context(ModelServer(tuned.model_dir, api_key=key,
                                                 model_name="legal-tuned",
                                                 log_file=logs / "tuned-server.log"))
        progress.update(task, completed=1)
        tuned_backend = local_backend("legal-tuned", server.base_url, server.model_name, key)
        cloud = _cloud(settings)
        router = Router([tuned_backend, base_backend, *cloud],
                        energy_usd_per_hour=settings.energy_usd_per_hour)
        tuned_agent = RagAgent(settings, LEGAL_COLLECTION, router, embedder=embedder,
                               max_tokens=options.max_tokens, top_k=options.top_k)
        summaries.append(_evaluate(progress, "evaluate fine-tuned + RAG (routed)", tuned_agent,
                                   suite, context, "fine-tuned", options))
        if cloud:
            cloud_agent = RagAgent(settings, LEGAL_COLLECTION, Router(cloud), embedder=embedder,
                                   max_tokens=options.max_tokens, top_k=options.top_k)
            summaries.append(_evaluate(progress, f"evaluate {settings.cloud_model} + RAG",
                                       cloud_agent, suite, context, "cloud", options))

    seconds = time.perf_counter() - started
    write_report(out, summaries, extra={
        "finetune_run_id": tuned.run_id, "finetune_steps": tuned.steps,
        "finetune_seconds": round(tuned.seconds, 1), "final_train_loss": tuned.final_loss,
        "tuned_model_dir": str(tuned.model_dir), "demo_seconds": round(seconds, 1),
        "test_cases": len(test_cases), "train_examples": len(examples),
        "train_pairs": len(train_records),
    })
    return DemoResult(summaries, out, tuned.model_dir, tuned.run_id, seconds)


def legal_suite_path() -> Path:
    return legal_corpus_dir().parent / "suites" / "legal-test.yaml"


def _evaluate(progress: Progress, title: str, agent: RagAgent, suite: Suite,
              context: ScoreContext, label: str, options: DemoOptions) -> ModelEval:
    """One evaluation is one eval run of the legal suite (JSON, HTML, MLflow), uncached:
    the demo's models are new each time."""
    task = progress.add_task(title, total=len(suite.cases))
    target = CallableTarget(agent.run, key=f"demo:{label}")
    run = run_suite_sync(suite, target, concurrency=options.concurrency, retries=1,
                         context=context, label=f"demo-{label}",
                         progress=lambda done, total: progress.update(task, completed=done))
    publish(run, settings=context.settings, params={"top_k": options.top_k,
                                                     "max_tokens": options.max_tokens})
    return ModelEval(label, run)


def _cloud(settings: Settings) -> list:
    backend = cloud_backend(settings)
    return [backend] if backend else []


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console)
