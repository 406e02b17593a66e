"""One suite run as the CLI does it: load, open the target (and judge), run with a
progress bar, publish (JSON, HTML, MLflow), check the gates."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agentcycle.errors import ConfigError
from agentcycle.evals.cache import OutputCache
from agentcycle.evals.gates import GateResult, check_gates, parse_gate
from agentcycle.evals.publish import publish
from agentcycle.evals.results import CaseResult, EvalRun, by_tag, new_run_id, summarize
from agentcycle.evals.runner import run_suite_sync
from agentcycle.evals.scoring import ScoreContext
from agentcycle.evals.suite import Suite, load_suite
from agentcycle.evals.target_spec import open_target, split_spec

# Scorers that grade with a judge model (ctx.judge).
JUDGED = {"llm_judge", "faithfulness"}
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass
class RunOptions:
    target: str | None = None
    gates: list[str] = field(default_factory=list)
    concurrency: int = 8
    retries: int = 2
    cache: bool = True
    resume: str | None = None
    out: Path | None = None
    limit: int | None = None
    judge: str | None = None
    mlflow: bool = True


def run_cli_suite(path: Path, settings, options: RunOptions,
                  console: Console) -> tuple[EvalRun, list[GateResult]]:
    suite = load_suite(path).limited(options.limit)
    gates = [parse_gate(g) for g in [*suite.gates, *options.gates]]
    names = [s.name for s in suite.bound_scorers()]
    # Unknown metrics fail before any call (tag metrics from the cases' tags).
    blank = [CaseResult(id=c.id, input="", tags=c.tags) for c in suite.cases]
    check_gates(gate_metrics(summarize([], names, 0.0), by_tag(blank, names)), gates)
    if options.out is not None:
        # Checked before any model call: failing after the run would lose its report.
        if options.out.exists() and not options.out.is_dir():
            raise ConfigError(f"--out {options.out}: that is a file, not a folder")
        try:
            options.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"--out {options.out}: cannot create it ({exc.strerror})") from None
    spec = options.target or suite.target
    if not spec:
        raise ConfigError(f"{path}: no target: pass --target or set 'target:' in the suite")
    if options.mlflow:
        # An unusable MLflow store fails now, not after every model call was made; an
        # unreachable one keeps the run on disk and queues it (`agentcycle publish`).
        from agentcycle.observe.outbox import unreachable
        from agentcycle.observe.tracing import setup_tracking

        if not unreachable(settings.tracking_uri):
            setup_tracking(settings)
    cache = OutputCache.default(settings) if options.cache else None
    with open_target(spec, settings, base_dir=path.parent) as target, \
            judge_context(settings, suite, options.judge) as context, \
            _progress(console) as progress:
        task = progress.add_task(f"{suite.name} against {shown_spec(spec)[:50]}",
                                 total=len(suite.cases))
        run_id = options.resume or new_run_id()
        try:
            run = run_suite_sync(
                suite, target, concurrency=options.concurrency, retries=options.retries,
                cache=cache, resume=options.resume, run_id=run_id, context=context,
                progress=lambda done, total: progress.update(task, completed=done))
        except KeyboardInterrupt:
            console.print(f"interrupted: every finished case is kept; continue with "
                          f"`agentcycle eval run {path} --resume {run_id}`", soft_wrap=True)
            raise
    results = check_gates(gate_metrics(run.metrics, run.tags), gates)
    publish(run, settings=settings, gates=results, out=options.out, mlflow=options.mlflow,
            params={"target_spec": shown_spec(spec)[:250]})
    if options.mlflow and not run.mlflow_run_id:
        from agentcycle.evals.results import runs_dir

        console.print(f"[yellow]MLflow at {settings.tracking_uri} did not take run "
                      f"{run.run_id}[/yellow]: it is kept in {runs_dir(settings) / run.run_id} "
                      "and queued; send it with `agentcycle publish`", highlight=False,
                      soft_wrap=True)
    return run, results


def shown_spec(spec: str) -> str:
    """A target spec fit to show or store: a ``key=`` option's value masked."""
    import re

    return re.sub(r"([?&]key=)[^&#]*", r"\1***", spec)


def gate_metrics(metrics: dict[str, float],
                 tags: dict[str, dict[str, float]]) -> dict[str, float]:
    """What a gate may name: the run's metrics and, as MLflow names them, each tag's
    (``tag/refunds/accuracy>=0.8``)."""
    return metrics | {f"tag/{tag}/{k}": v for tag, values in tags.items()
                      for k, v in values.items()}


@contextlib.contextmanager
def judge_context(settings, suite: Suite, judge: str | None) -> Iterator[ScoreContext]:
    """The scorers' context; with a judge when a judged scorer needs one: the given
    endpoint, else the bundled model served here (and the report says it is small)."""
    context = ScoreContext(settings=settings)
    spec = judge or suite.judge
    needs_judge = any(getattr(s.fn, "__name__", "") in JUDGED for s in suite.bound_scorers())
    if spec:
        _set_judge(context, spec)
        yield context
    elif needs_judge:
        from agentcycle.rag.session import local_backends

        with local_backends(settings) as backends:
            backend = backends[0]
            _set_judge(context, f"openai:{backend.api_base}#{backend.served_model}",
                       api_key=backend.api_key, small=settings.server_url is None)
            yield context
    else:
        yield context


def _set_judge(context: ScoreContext, spec: str, api_key: str | None = None,
               small: bool | None = None) -> None:
    import os

    from agentcycle.evals.scorers import openai_judge

    kind, rest, options = split_spec(spec)
    url, _, model = rest.partition("#")
    if kind != "openai" or not model:
        raise ConfigError(f"bad judge '{spec}': write openai:URL#MODEL")
    key = api_key or options.get("key") or os.environ.get("AGENTCYCLE_API_KEY")
    context.judge = openai_judge(url, model, key)
    context.judge_model = model
    if small is None:  # our bundled model, served on this machine
        small = urlparse(url).hostname in _LOOPBACK and (
            "smollm" in model.lower() or model in ("base", "local"))
    context.judge_is_small_local = small


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=False)
