"""The evidence an eval run gives about a model: its metrics, lineage and gates."""

from __future__ import annotations

from pathlib import Path

from agentcycle.errors import DataError
from agentcycle.settings import Settings


def eval_evidence(eval_run: str, gates: list[str] | None = None,
                  settings: Settings | None = None) -> tuple[dict[str, float], dict, list]:
    """An eval run's metrics, its lineage entries, and its gates checked again: the
    suite's own (read from the suite file it ran) plus ``gates``."""
    from agentcycle.evals.gates import check_gates, parse_gate
    from agentcycle.evals.results import load_run
    from agentcycle.evals.session import gate_metrics
    from agentcycle.evals.suite import load_suite

    settings = settings or Settings()
    run = load_run(eval_run, settings)
    if not run.finished:
        raise DataError(f"eval run {run.run_id} did not finish: finish it (--resume) first")
    specs = list(gates or [])
    if run.suite_path and Path(run.suite_path).is_file():
        specs = [*load_suite(Path(run.suite_path)).gates, *specs]
    results = check_gates(gate_metrics(run.metrics, run.tags), [parse_gate(g) for g in specs])
    lineage = {"eval_run": run.run_id, "eval_suite": run.suite,
               "eval_mlflow_run": run.mlflow_run_id}
    return dict(run.metrics), lineage, results
