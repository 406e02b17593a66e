"""The lifecycle on the legal example, end to end, composed from the phase packages.

ingest -> evaluate the base model (RAG on the test split, tool use on the held-out tool
suite) -> fine-tune one adapter on both train sets -> serve the tuned model -> route the
agents to it -> evaluate again -> compare, paired (McNemar), with intervals -> report.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from agentcycle._digest import tree_sha256
from agentcycle._hardware import native_bf16
from agentcycle._progress import phase_progress
from agentcycle.evals import (
    CallableTarget,
    OutputCache,
    ScoreContext,
    Suite,
    load_suite,
    publish,
)
from agentcycle.evals.runner import run_suite_sync
from agentcycle.evals.targets import digest
from agentcycle.examples import LEGAL_COLLECTION, legal_corpus_dir, legal_split
from agentcycle.examples.legal import LEGAL_TOOL_PROMPT
from agentcycle.finetune import TrainParams, finetune, read_jsonl, to_examples
from agentcycle.finetune.dataprep import (
    called_tool,
    check_answer_form,
    sample_per_fact,
    sample_spread,
    with_answer_form,
)
from agentcycle.models import chat_model_dir, embedding_model_dir
from agentcycle.rag import Embedder, RagAgent, ingest
from agentcycle.report import ModelEval, ToolEval, write_report
from agentcycle.router import Router
from agentcycle.router.backends import cloud_backend, local_backend
from agentcycle.serving import ModelServer
from agentcycle.settings import Settings

# The longest tool-use example (six tool schemas, a search result, the answer) is about
# 2.3K tokens; a shorter bound refuses it (no answer tokens left).
TRAIN_MAX_LENGTH = 2560


def default_top_layers(full: bool = False) -> int:
    """LoRA on the top 8 of 30 layers; the --full recipe's larger data set gains from 16
    (right tool 88.7% -> 92.8%, RAG +33.5 -> +36.1 points; docs/benchmarks.md)."""
    return 16 if full else 8


def default_params(full: bool = False) -> TrainParams:
    """The demo's fine-tune: 2 epochs at 2e-3 (measured in docs/benchmarks.md)."""
    return TrainParams(epochs=2.0, learning_rate=2e-3, batch_size=8,
                       top_layers=default_top_layers(full),
                       max_length=TRAIN_MAX_LENGTH, save_steps=0)


@dataclass
class DemoOptions:
    seed: int = 7
    test_limit: int | None = None  # RAG: the first N test questions (default: all)
    tool_test_limit: int | None = 40  # tool use: N held-out cases spread over the suite
    wordings_per_fact: int = 2  # RAG training questions per fact of the Act (6 exist)
    train_limit: int | None = None  # at most N RAG training pairs (a quick slice)
    tool_records: int | None = 128  # tool-use training records, spread over the tools
    # "quote": RAG answers quote the supporting sentence, then state the fact (RAFT's
    # form; docs/benchmarks.md); "short": the data's one-sentence answers.
    answer_form: str = "quote"
    tools: bool = True  # the tool-use half of the demo
    params: TrainParams = field(default_factory=default_params)
    concurrency: int = 4
    max_tokens: int = 48
    # A tool-use turn's cap. The longest right turn, two calls, takes 96 tokens before its
    # end marker: the old cap of 96 left no margin, and a longer turn lost its second call
    # unseen (docs/benchmarks.md).
    tool_max_tokens: int = 128
    # One passage: the cited section ranks first for most test questions, and a 135M
    # model extracts far better from one passage than from two (docs/benchmarks.md).
    top_k: int = 1
    # ...cut to its 2 sentences closest to the question (rag.compress): base and tuned
    # models both pick the answering sentence more often from 2 than from the whole
    # section (docs/benchmarks.md). None: the whole section.
    keep_sentences: int | None = 2
    # The base model's evaluations from an earlier run with the same suites (the
    # benchmark's seeds share one): (RAG, tool use or None). None: evaluate it here.
    reuse_base: tuple[ModelEval, ToolEval | None] | None = None
    # Reuse the base model's answers cached by an earlier demo when nothing that decides
    # them changed (_base_key); False: ask the base model again.
    cache_base: bool = True

    @classmethod
    def full(cls, **overrides: Any) -> DemoOptions:
        """The longer recipe: every wording, every tool record, every test case."""
        return cls(**{"wordings_per_fact": 6, "tool_records": None, "tool_test_limit": None,
                      "params": default_params(full=True), **overrides})


@dataclass
class DemoResult:
    summaries: list[ModelEval]
    tool_summaries: list[ToolEval]
    report_dir: Path
    tuned_model_dir: Path
    finetune_run_id: str
    seconds: float
    base_answers_cached: int = 0  # base model answers reused from an earlier demo


def run_demo(settings: Settings | None = None, options: DemoOptions | None = None,
             console: Console | None = None) -> DemoResult:
    settings = settings or Settings()
    options = options or DemoOptions()
    check_answer_form(options.answer_form)  # before any work
    console = console or Console()
    started = time.perf_counter()
    out = settings.ensure_home() / "demo"
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    suite = load_suite(legal_suite_path()).limited(options.test_limit)
    tool_suite = load_suite(legal_tools_suite_path()).sampled(options.tool_test_limit)
    key = secrets.token_urlsafe(16)  # the demo's servers refuse requests without it

    with phase_progress(console) as progress, contextlib.ExitStack() as stack:
        task = progress.add_task("prepare the bundled models", total=None)
        base_dir = chat_model_dir(settings)
        embedder = Embedder(embedding_model_dir(settings))
        progress.update(task, total=1, completed=1)

        task = progress.add_task("ingest the statute into Qdrant", total=None)
        ingest(legal_corpus_dir(), LEGAL_COLLECTION, settings, embedder=embedder,
               progress=lambda d, t: progress.update(task, completed=d, total=t))
        context = ScoreContext(settings=settings, embedder=embedder)
        tools = _legal_tools(settings, embedder) if options.tools else []

        base_backend = _serve(stack, progress, base_dir, "base", key, logs)
        base_agent = _rag_agent(settings, Router([base_backend]), embedder, options)
        cache = (stack.enter_context(contextlib.closing(OutputCache.default(settings)))
                 if options.cache_base and not options.reuse_base else None)
        base = (_Base(label=f"base:{_base_key(settings, base_dir, options)}", cache=cache)
                if cache else None)
        if options.reuse_base:
            summaries = [options.reuse_base[0]]
            tool_summaries = [t for t in options.reuse_base[1:] if t and options.tools]
        else:
            summaries = [_evaluate(progress, "evaluate base + RAG on the test split",
                                   base_agent, suite, context, "base", options, base=base)]
            tool_summaries = []
        if options.tools and not tool_summaries:
            tool_summaries.append(_evaluate_tools(
                progress, "evaluate base + tools on held-out tool prompts",
                _tool_agent(settings, Router([base_backend]), tools, options), tool_suite,
                context, "base", options, base=base))

        examples, counts = _training_examples(options, base_agent)
        task = progress.add_task("fine-tune (LoRA) on both train sets", total=None)
        tuned = finetune(examples, out / "legal-tuned", base_dir, settings, options.params,
                         overwrite=True, run_name="demo-finetune",
                         on_step=lambda s, t, loss: progress.update(
                             task, completed=s, total=t,
                             description=f"fine-tune (LoRA) on both train sets, loss "
                                         f"{loss if loss is not None else float('nan'):.3f}"))

        tuned_backend = _serve(stack, progress, tuned.model_dir, "legal-tuned", key, logs)
        cloud = _cloud(settings)
        router = Router([tuned_backend, base_backend, *cloud],
                        energy_usd_per_hour=settings.energy_usd_per_hour)
        summaries.append(_evaluate(progress, "evaluate fine-tuned + RAG (routed)",
                                   _rag_agent(settings, router, embedder, options), suite,
                                   context, "fine-tuned", options))
        if options.tools:
            tool_summaries.append(_evaluate_tools(
                progress, "evaluate fine-tuned + tools on held-out tool prompts",
                _tool_agent(settings, Router([tuned_backend]), tools, options), tool_suite,
                context, "fine-tuned", options))
        if cloud:
            summaries.append(_evaluate(progress, f"evaluate {settings.cloud_model} + RAG",
                                       _rag_agent(settings, Router(cloud), embedder, options),
                                       suite, context, "cloud", options))

    tuned_runs = [summaries[1].run.run_id] + [t.run.run_id for t in tool_summaries[1:]]
    registry = register_tuned(settings, tuned.model_dir, tuned.run_id, tuned_runs)
    seconds = time.perf_counter() - started
    write_report(out, summaries, tool_summaries=tool_summaries, extra={
        "registry": registry,
        "finetune_run_id": tuned.run_id, "finetune_steps": tuned.steps,
        "finetune_seconds": round(tuned.seconds, 1), "final_train_loss": tuned.final_loss,
        "finetune_tokens": tuned.tokens, "tuned_model_dir": str(tuned.model_dir),
        "demo_seconds": round(seconds, 1), "test_cases": len(suite.cases),
        "tool_test_cases": len(tool_suite.cases) if options.tools else 0,
        "train_examples": len(examples), **counts, "seed": options.seed,
        "answer_form": options.answer_form,
        "base_answers_cached": cache.hits if cache else 0,
    })
    return DemoResult(summaries, tool_summaries, out, tuned.model_dir, tuned.run_id, seconds,
                      base_answers_cached=cache.hits if cache else 0)


def register_tuned(settings: Settings, model_dir: Path, finetune_run: str,
                   eval_runs: list[str], name: str = "legal-tuned") -> dict[str, Any]:
    """Register the tuned model with its eval metrics and data lineage; move @champion
    to it only when every gate of its eval runs passed."""
    from agentcycle.evals.evidence import eval_evidence
    from agentcycle.finetune.registry import (
        PromotionRefused,
        finetune_lineage,
        promote,
        register_model,
    )

    metrics, lineage, gates = {}, finetune_lineage(finetune_run, settings), []
    for run_id in eval_runs:
        run_metrics, run_lineage, run_gates = eval_evidence(run_id, settings=settings)
        suite = run_lineage["eval_suite"]
        metrics |= {f"{suite}.{k}": v for k, v in run_metrics.items()}
        lineage |= {f"{key}.{suite}": value for key, value in run_lineage.items()}
        gates += run_gates
    version = register_model(model_dir, name, run_id=finetune_run, metrics=metrics,
                             lineage=lineage, settings=settings)
    try:
        promote(name, version.version, gates, eval_run=eval_runs[0], settings=settings)
        verdict = "promoted to @champion"
    except PromotionRefused as refused:
        verdict = str(refused)
    return {"model": name, "version": version.version, "uri": version.uri,
            "champion": verdict, "gates": [f"{g.gate}: {'pass' if g.passed else 'FAIL'} "
                                           f"({g.value:.3g})" for g in gates]}


def legal_suite_path() -> Path:
    return legal_corpus_dir().parent / "suites" / "legal-test.yaml"


def legal_tools_suite_path() -> Path:
    return legal_corpus_dir().parent / "suites" / "legal-tools.yaml"


def legal_tool_records_path() -> Path:
    return legal_corpus_dir().parent / "tooluse" / "train.jsonl"


def _training_examples(options: DemoOptions, base_agent: RagAgent) -> tuple[list, dict]:
    """RAG pairs (prompts built with the agent's own retrieval) plus tool-use turns."""
    records = sample_per_fact(read_jsonl(legal_split("train")), options.wordings_per_fact,
                              seed=options.seed)[: options.train_limit]
    records = with_answer_form(records, options.answer_form)
    examples = to_examples(records, legal_split("train"), retrieve=base_agent.retrieve)
    counts = {"train_pairs": len(records), "rag_examples": len(examples)}
    if options.tools:
        tool_records = sample_spread(read_jsonl(legal_tool_records_path()),
                                     options.tool_records, called_tool, seed=options.seed)
        tool_examples = to_examples(tool_records, legal_tool_records_path())
        examples += tool_examples
        counts |= {"tool_records": len(tool_records), "tool_examples": len(tool_examples)}
    return examples, counts


def _serve(stack: contextlib.ExitStack, progress: Progress, model_dir: Path, name: str,
           key: str, logs: Path):
    task = progress.add_task(f"serve the {name} model", total=1)
    server = stack.enter_context(ModelServer(model_dir, api_key=key, model_name=name,
                                             log_file=logs / f"{name}-server.log"))
    progress.update(task, completed=1)
    return local_backend(name, server.base_url, server.model_name, key)


def _rag_agent(settings: Settings, router: Router, embedder: Embedder,
               options: DemoOptions) -> RagAgent:
    return RagAgent(settings, LEGAL_COLLECTION, router, embedder=embedder,
                    max_tokens=options.max_tokens, top_k=options.top_k,
                    keep_sentences=options.keep_sentences)


def _legal_tools(settings: Settings, embedder: Embedder) -> list:
    from agentcycle.examples.legal.tools import legal_tools

    return legal_tools(settings, embedder=embedder)


def _tool_agent(settings: Settings, router: Router, tools: list, options: DemoOptions):
    from agentcycle.agents.tools import ToolAgent

    return ToolAgent(router, tools, system_prompt=LEGAL_TOOL_PROMPT, max_steps=3,
                     max_tokens=options.tool_max_tokens, settings=settings)


@dataclass
class _Base:
    """How the base model's evaluations are keyed and cached (the tuned model's are
    never cached: it is new each time)."""

    label: str
    cache: OutputCache


def _base_key(settings: Settings, base_dir: Path, options: DemoOptions) -> str:
    """What decides the base model's answers: its weights, the statute and the embedder
    (retrieval), the agents' settings, agentcycle's code (prompts, tool schemas,
    retrieval, serving), the engine's versions and its dtype (bf16 where the CPU has it:
    a data dir shared by machines of both kinds must not mix them). A change to any of
    them asks the base model again."""
    import torch
    import transformers

    package = Path(__file__).parent  # this module lies at the package's top
    return digest(tree_sha256(base_dir), tree_sha256(legal_corpus_dir()),
                  tree_sha256(embedding_model_dir(settings)), tree_sha256(package, "*.py"),
                  options.top_k, options.keep_sentences, options.max_tokens,
                  options.tool_max_tokens, torch.__version__, transformers.__version__,
                  native_bf16())[:16]


def _evaluate(progress: Progress, title: str, agent: Any, suite: Suite,
              context: ScoreContext, label: str, options: DemoOptions,
              concurrency: int | None = None, base: _Base | None = None) -> ModelEval:
    """One evaluation is one eval run of a legal suite (JSON, HTML, MLflow); only the
    base model's answers are cached."""
    task = progress.add_task(title, total=len(suite.cases))
    target = CallableTarget(agent.run, key=f"demo:{suite.name}:{base.label if base else label}")
    run = run_suite_sync(suite, target, concurrency=concurrency or options.concurrency,
                         retries=1, context=context, label=f"demo-{label}",
                         cache=base.cache if base else None,
                         progress=lambda done, total: progress.update(task, completed=done))
    publish(run, settings=context.settings, params={"top_k": options.top_k,
                                                     "keep_sentences": options.keep_sentences,
                                                     "max_tokens": options.max_tokens,
                                                     "tool_max_tokens": options.tool_max_tokens,
                                                     "seed": options.seed})
    return ModelEval(label, run)


def _evaluate_tools(progress: Progress, title: str, agent: Any, suite: Suite,
                    context: ScoreContext, label: str, options: DemoOptions,
                    base: _Base | None = None) -> ToolEval:
    # One at a time: the engine's continuous batching slows ~1.4K-token tool prompts
    # sharply when several run together (docs/benchmarks.md).
    run = _evaluate(progress, title, agent, suite, context, label, options, concurrency=1,
                    base=base).run
    return ToolEval(label, run, suite.cases)


def _cloud(settings: Settings) -> list:
    backend = cloud_backend(settings)
    return [backend] if backend else []
