"""What a run produced: per-case results, aggregate metrics, and where they are kept.

Each run lives in ``<home>/evals/runs/<run_id>/``: ``journal.jsonl`` (a header line,
then one line per finished case, fsync'd as it finishes: an interrupted run loses no
finished case and ``--resume`` continues it) and ``run.json`` (the canonical result
that ``compare`` reads) next to ``report.html``.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from agentcycle._files import atomic_write
from agentcycle._jsonl import damaged_line, journal_records, open_journal
from agentcycle.errors import DataError
from agentcycle.evals.types import Output, Score


class CaseResult(BaseModel):
    id: str
    input: str  # the question as text
    reference: str | None = None
    tags: list[str] = Field(default_factory=list)
    output: Output = Field(default_factory=Output)
    scores: dict[str, Score] = Field(default_factory=dict)
    passed: bool = False  # every scorer passed
    error: str | None = None
    cached: bool = False
    attempts: int = 1


class EvalRun(BaseModel):
    run_id: str
    suite: str
    suite_path: str = ""
    target: str  # the target's key
    label: str = ""
    started_at: str = ""
    finished: bool = False
    wall_s: float = 0.0
    concurrency: int = 1
    scorers: list[str] = Field(default_factory=list)
    judge_model: str | None = None
    judge_is_small_local: bool = False
    results: list[CaseResult] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)
    tags: dict[str, dict[str, float]] = Field(default_factory=dict)
    mlflow_run_id: str | None = None

    def metric(self, name: str, default: float = 0.0) -> float:
        return self.metrics.get(name, default)


def new_run_id() -> str:
    """Sortable by start time: the suffix starts with the milliseconds, so two runs in
    one second (a CI job, a script) still list newest first."""
    now = datetime.now(UTC)
    return now.strftime("%Y%m%d-%H%M%S-") + f"{now.microsecond // 1000:03d}" + os.urandom(
        2).hex()[:3]


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% confidence interval of a proportion; honest about how little 32 cases say."""
    if n == 0:
        return (0.0, 0.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def summarize(results: list[CaseResult], scorers: list[str], wall_s: float) -> dict[str, float]:
    """The run's metrics: accuracy (every scorer passed), per-scorer mean and pass rate,
    errors, latency, tokens and cost. Errored cases count as failed, never as scored."""
    n = len(results)
    ok = [r for r in results if r.error is None]
    passed = sum(r.passed for r in results)
    low, high = wilson_interval(passed, n)
    metrics: dict[str, float] = {
        "cases": n, "errors": n - len(ok), "error_rate": (n - len(ok)) / n if n else 0.0,
        "accuracy": passed / n if n else 0.0, "accuracy_ci95_low": low,
        "accuracy_ci95_high": high,
    }
    for name in scorers:
        values = [r.scores[name].value for r in ok if name in r.scores]
        metrics[f"{name}.mean"] = statistics.fmean(values) if values else 0.0
        metrics[f"{name}.pass_rate"] = (sum(r.scores[name].passed for r in ok if name in r.scores)
                                        / n if n else 0.0)
    metrics.update(_usage(ok, wall_s, n))
    return metrics


def _usage(ok: list[CaseResult], wall_s: float, n: int) -> dict[str, float]:
    latencies = sorted(r.output.latency_ms for r in ok)
    prompt = sum(r.output.prompt_tokens for r in ok)
    completion = sum(r.output.completion_tokens for r in ok)
    cost = sum(r.output.cost_usd for r in ok)
    rates = [r.output.completion_tokens / (r.output.latency_ms / 1000) for r in ok
             if r.output.latency_ms > 0 and not r.cached]
    return {
        "p50_latency_ms": _percentile(latencies, 0.50),
        "p95_latency_ms": _percentile(latencies, 0.95),
        "prompt_tokens": prompt, "completion_tokens": completion,
        "total_cost_usd": cost,
        "cost_per_1k_tokens": 1000 * cost / (prompt + completion) if prompt + completion else 0.0,
        "tokens_per_s": statistics.fmean(rates) if rates else 0.0,
        "wall_s": wall_s, "cases_per_s": n / wall_s if wall_s > 0 else 0.0,
        # cases where a model call stopped at max_tokens: a low cap can fail a right answer
        "truncated": sum(r.output.truncated for r in ok),
    }


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = q * (len(sorted_values) - 1)  # linear interpolation, as numpy's default
    low, high = math.floor(index), math.ceil(index)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (index - low)


def by_tag(results: list[CaseResult], scorers: list[str]) -> dict[str, dict[str, float]]:
    tags = sorted({t for r in results for t in r.tags})
    out = {}
    for tag in tags:
        tagged = [r for r in results if tag in r.tags]
        metrics = summarize(tagged, scorers, 0.0)
        out[tag] = {k: metrics[k] for k in ("cases", "accuracy", "errors")} | {
            f"{s}.{kind}": metrics[f"{s}.{kind}"] for s in scorers
            for kind in ("mean", "pass_rate")}
    return out


# -- where runs live ----------------------------------------------------------------

def runs_dir(settings=None) -> Path:
    from agentcycle.settings import Settings

    return (settings or Settings()).home / "evals" / "runs"


class Journal:
    """Append-only JSONL of finished cases; each line is on disk before the next case."""

    def __init__(self, path: Path):
        self.path = path
        self._handle = open_journal(path)  # a resumed run's torn last line is cut

    def write(self, record: dict[str, Any]) -> None:
        self._handle.write(json.dumps(record, default=str) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()

    @staticmethod
    def read(path: Path) -> tuple[dict[str, Any], list[CaseResult]]:
        """The header and the finished cases. A torn last line (a kill mid-write) is
        skipped; any other damage is an error naming its line, not a silent gap."""
        if not path.is_file():
            raise DataError(f"no journal at {path}: nothing to resume")
        advice = "start a new run instead of resuming"
        header: dict[str, Any] = {}
        results: dict[str, CaseResult] = {}
        records = journal_records(path, advice=advice)
        for number, record in records:
            try:
                if record.get("type") == "header":
                    header = header or record
                elif record.get("type") == "case":
                    result = CaseResult.model_validate(record.get("result"))
                    results[result.id] = result  # a retried case's newest line wins
            except ValueError as exc:  # pydantic's
                raise DataError(damaged_line(path, number, "journal", exc, advice)) from None
        if not header and path.stat().st_size:
            raise DataError(f"{path}: the journal has no header line; start a new run "
                            "instead of resuming")
        return header, list(results.values())


def save_run(run: EvalRun, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "run.json"
    atomic_write(path, run.model_dump_json(indent=2))
    return path


def run_path(ref: str | Path, settings=None) -> Path:
    """The run.json of a run given as a run.json path, a run folder, or a run id."""
    path = Path(ref)
    if path.is_dir():
        path = path / "run.json"
    if not path.is_file():
        path = runs_dir(settings) / str(ref) / "run.json"
    if not path.is_file():
        raise DataError(f"no eval run '{ref}' (a run.json path, or an id from "
                        "`agentcycle eval list`)")
    return path


def load_run(ref: str | Path, settings=None) -> EvalRun:
    """A run from a run.json path, a run folder, or a run id in the runs dir."""
    path = run_path(ref, settings)
    try:
        return EvalRun.model_validate_json(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DataError(f"{path}: not an eval run ({str(exc).splitlines()[0]})") from None


def list_runs(settings=None) -> list[EvalRun]:
    """Past runs, newest first (finished or not)."""
    runs = []
    for folder in sorted(runs_dir(settings).glob("*/run.json"), reverse=True):
        try:
            runs.append(EvalRun.model_validate_json(folder.read_text(encoding="utf-8")))
        except ValueError:
            continue
    return runs
