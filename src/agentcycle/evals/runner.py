"""Run an agent over a set of cases concurrently and summarize what was measured."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from agentcycle.evals.dataset import QACase
from agentcycle.evals.scorers import embedding_similarity, exact_match, keyword_match
from agentcycle.observe.costs import price_per_1k
from agentcycle.rag.agent import Answer

AgentFn = Callable[[str], Answer]


@dataclass
class CaseResult:
    id: str
    question: str
    reference: str
    answer: str
    passed: bool
    exact: bool
    similarity: float
    latency_ms: float
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    backend: str
    error: str | None = None


@dataclass
class EvalSummary:
    label: str
    model: str
    cases: int
    errors: int
    accuracy: float
    exact_match: float
    similarity: float
    p50_latency_ms: float
    tokens_per_s: float
    cost_per_1k_tokens: float
    total_cost_usd: float
    wall_s: float
    results: list[CaseResult] = field(default_factory=list)
    accuracy_ci95: tuple[float, float] = (0.0, 0.0)

    def metrics(self) -> dict[str, float]:
        data = asdict(self)
        return {k: v for k, v in data.items() if isinstance(v, int | float) and k != "cases"}


def evaluate(agent: AgentFn, cases: list[QACase], embedder, *, label: str = "model",
             concurrency: int = 4,
             on_case: Callable[[int, int], None] | None = None) -> EvalSummary:
    """Ask every case; a case whose call fails is scored as an error, and the run goes on."""
    started = time.perf_counter()
    done = 0

    def run_one(case: QACase) -> tuple[QACase, Answer | None, str | None]:
        nonlocal done
        try:
            result = (case, agent(case.question), None)
        except Exception as exc:  # one failing case must not sink the whole evaluation
            result = (case, None, f"{type(exc).__name__}: {exc}")
        done += 1
        if on_case:
            on_case(done, len(cases))
        return result

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        outcomes = list(pool.map(run_one, cases))
    wall_s = time.perf_counter() - started
    answered = [(c, a) for c, a, _ in outcomes if a is not None]
    similarities = iter(embedding_similarity(
        embedder, [a.answer for _, a in answered], [c.answer for c, _ in answered]))
    results = []
    for case, answer, error in outcomes:
        if answer is None:
            results.append(CaseResult(case.id, case.question, case.answer, "", False, False, 0.0,
                                      0.0, 0, 0, 0.0, "", error))
            continue
        results.append(CaseResult(
            case.id, case.question, case.answer, answer.answer,
            passed=keyword_match(answer.answer, case.keywords),
            exact=exact_match(answer.answer, case.answer), similarity=next(similarities),
            latency_ms=answer.latency_ms, prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens, cost_usd=answer.cost_usd,
            backend=answer.backend))
    return summarize(results, label, wall_s)


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% confidence interval of a proportion; honest about how little 32 cases say."""
    if n == 0:
        return (0.0, 0.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def paired_flips(before: EvalSummary, after: EvalSummary) -> tuple[int, int]:
    """Cases fixed and cases broken between two runs over the same cases."""
    was = {r.id: r.passed for r in before.results}
    fixed = sum(1 for r in after.results if r.passed and not was.get(r.id, False))
    broken = sum(1 for r in after.results if not r.passed and was.get(r.id, False))
    return fixed, broken


def summarize(results: list[CaseResult], label: str, wall_s: float) -> EvalSummary:
    ok = [r for r in results if r.error is None]
    n = len(results) or 1
    tokens = sum(r.prompt_tokens + r.completion_tokens for r in ok)
    cost = sum(r.cost_usd for r in ok)
    decode_rates = [r.completion_tokens / (r.latency_ms / 1000) for r in ok if r.latency_ms > 0]
    models = sorted({r.backend for r in ok})
    return EvalSummary(
        label=label, model=",".join(models), cases=len(results), errors=len(results) - len(ok),
        accuracy=sum(r.passed for r in results) / n,
        exact_match=sum(r.exact for r in results) / n,
        similarity=statistics.fmean([r.similarity for r in ok]) if ok else 0.0,
        p50_latency_ms=statistics.median([r.latency_ms for r in ok]) if ok else 0.0,
        tokens_per_s=statistics.fmean(decode_rates) if decode_rates else 0.0,
        cost_per_1k_tokens=price_per_1k(cost, tokens), total_cost_usd=cost, wall_s=wall_s,
        results=results, accuracy_ci95=wilson_interval(sum(r.passed for r in results),
                                                       len(results)))


def log_to_mlflow(summary: EvalSummary, run_name: str | None = None,
                  params: dict | None = None) -> str:
    """One MLflow run per evaluation: the summary metrics and the per-case table."""
    import mlflow

    with mlflow.start_run(run_name=run_name or f"eval-{summary.label}") as run:
        mlflow.set_tag("agentcycle.phase", "evaluate")
        mlflow.log_params({"label": summary.label, "model": summary.model,
                           "cases": summary.cases, **(params or {})})
        mlflow.log_metrics(summary.metrics())
        rows = [asdict(r) for r in summary.results]
        mlflow.log_table({k: [row[k] for row in rows] for k in rows[0]} if rows else {},
                         artifact_file="cases.json")
        return run.info.run_id
