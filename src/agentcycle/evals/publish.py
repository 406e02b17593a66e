"""Publish a finished run: run.json (what `compare` reads), report.html, and an MLflow
run with the metrics, the per-case table and both files as artifacts."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from agentcycle.evals.gates import GateResult
from agentcycle.evals.report_html import write_html
from agentcycle.evals.results import EvalRun, runs_dir, save_run


def publish(run: EvalRun, *, settings: Any = None, gates: list[GateResult] | None = None,
            out: Path | None = None, mlflow: bool = True,
            params: dict[str, Any] | None = None) -> Path:
    """Write the run's files (in its runs folder, copied to ``out``); returns run.json."""
    folder = runs_dir(settings) / run.run_id
    html = write_html(run, folder / "report.html", gates)
    path = save_run(run, folder)
    if mlflow:
        # None when MLflow did not take it: the run waits in the outbox (`agentcycle
        # publish`), its files are all here.
        run.mlflow_run_id = log_to_mlflow(run, settings, [path, html], params)
        save_run(run, folder)
    return _copy(out, path, html) or path


def _copy(out: Path | None, path: Path, html: Path) -> Path | None:
    if not out:
        return None
    out.mkdir(parents=True, exist_ok=True)
    for file in (path, html):
        shutil.copy2(file, out / file.name)
    return out / path.name


def case_table(run: EvalRun) -> dict[str, list]:
    """The per-case table, column by column (mlflow.log_table's shape)."""
    columns: dict[str, list] = {name: [] for name in (
        "id", "input", "reference", "tags", "passed", "error", "answer", "latency_ms",
        "prompt_tokens", "completion_tokens", "cost_usd", "model", "cached")}
    for name in run.scorers:
        columns[f"score.{name}"] = []
    for r in run.results:
        row = {"id": r.id, "input": r.input, "reference": r.reference or "",
               "tags": ",".join(r.tags), "passed": r.passed, "error": r.error or "",
               "answer": r.output.text, "latency_ms": r.output.latency_ms,
               "prompt_tokens": r.output.prompt_tokens,
               "completion_tokens": r.output.completion_tokens, "cost_usd": r.output.cost_usd,
               "model": r.output.model, "cached": r.cached}
        row |= {f"score.{n}": (r.scores[n].value if n in r.scores else None)
                for n in run.scorers}
        for key, value in row.items():
            columns[key].append(value)
    return columns


def log_to_mlflow(run: EvalRun, settings: Any = None, artifacts: list[Path] | None = None,
                  params: dict[str, Any] | None = None) -> str | None:
    """One MLflow run per eval run: params, metrics (overall and by tag), the case table.
    Returns its id, or None when MLflow is down: the run is then queued in the outbox
    and ``run.json``'s ``mlflow_run_id`` is filled in when it is published."""
    from agentcycle.observe.outbox import RunRecorder
    from agentcycle.settings import Settings

    settings = settings or Settings()
    recorder = RunRecorder.start(
        settings, f"eval-{run.label}", origin=f"eval run {run.run_id}",
        write_back=(runs_dir(settings) / run.run_id / "run.json", "mlflow_run_id"))
    recorder.set_tags({"agentcycle.phase": "evaluate", "agentcycle.eval_run": run.run_id,
                       "agentcycle.suite": run.suite})
    recorder.log_params({"suite": run.suite, "target": run.target[:500],
                         "cases": len(run.results), "scorers": ",".join(run.scorers),
                         "concurrency": run.concurrency, "judge": run.judge_model or "",
                         "judge_is_small_local": run.judge_is_small_local, **(params or {})})
    metrics = dict(run.metrics)
    for tag, values in run.tags.items():
        metrics |= {f"tag/{_safe(tag)}/{k}": v for k, v in values.items()}
    recorder.log_metrics(metrics)
    if run.results:
        recorder.log_table(case_table(run), artifact_file="cases.json")
    for path in artifacts or []:
        recorder.log_artifact(path)
    return recorder.finish()


def _safe(name: str) -> str:
    return re.sub(r"[^\w.\- ]", "_", name)
