"""Compare two runs of the same cases: which cases regressed, which improved, and
whether the difference is more than noise (paired tests on the same cases).

- pass/fail flips: exact McNemar test (a two-sided binomial test on the discordant pairs);
- per-case score deltas: Wilcoxon signed-rank test.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field

from agentcycle.errors import ConfigError, DataError
from agentcycle.evals.results import CaseResult, EvalRun


@dataclass
class CaseChange:
    id: str
    input: str
    before: bool
    after: bool
    score_before: float
    score_after: float
    answer_before: str
    answer_after: str

    @property
    def delta(self) -> float:
        return self.score_after - self.score_before


@dataclass
class Comparison:
    run_a: str
    run_b: str
    matched: int
    only_a: int
    only_b: int
    accuracy_a: float
    accuracy_b: float
    regressions: list[CaseChange] = field(default_factory=list)
    improvements: list[CaseChange] = field(default_factory=list)
    mean_score_delta: float = 0.0
    mcnemar_p: float = 1.0
    wilcoxon_p: float = 1.0
    metric_deltas: dict[str, float] = field(default_factory=dict)

    @property
    def significant(self) -> bool:
        return min(self.mcnemar_p, self.wilcoxon_p) < 0.05

    def as_dict(self) -> dict:
        return {**asdict(self), "significant": self.significant}


def case_score(result: CaseResult, scorer: str | None = None) -> float:
    """One number per case: the scorer's value, or the mean of its scores (0 if errored)."""
    if result.error or not result.scores:
        return 0.0
    if scorer:
        return result.scores[scorer].value if scorer in result.scores else 0.0
    return statistics.fmean(s.value for s in result.scores.values())


def case_passed(result: CaseResult, scorer: str | None = None) -> bool:
    if scorer is None or result.error:
        return result.passed
    return scorer in result.scores and result.scores[scorer].passed


def compare_runs(a: EvalRun, b: EvalRun, scorer: str | None = None) -> Comparison:
    """Run B against run A (the baseline), matched by case id; on one scorer's verdicts
    when ``scorer`` is given, else on every scorer passing."""
    if scorer and not (scorer in a.scorers and scorer in b.scorers):
        raise ConfigError(f"scorer '{scorer}' is not in both runs (A: {', '.join(a.scorers)}; "
                          f"B: {', '.join(b.scorers)})")
    before = {r.id: r for r in a.results}
    after = {r.id: r for r in b.results}
    ids = [i for i in before if i in after]
    if not ids:
        # Nothing paired: a "p=1, not significant" would read as "no change".
        raise DataError(f"runs {a.run_id} ({a.suite}) and {b.run_id} ({b.suite}) share no "
                        "case id: compare runs of the same suite")
    changes = [CaseChange(i, before[i].input, case_passed(before[i], scorer),
                          case_passed(after[i], scorer), case_score(before[i], scorer),
                          case_score(after[i], scorer),
                          before[i].output.text or before[i].error or "",
                          after[i].output.text or after[i].error or "") for i in ids]
    n = len(ids) or 1
    comparison = Comparison(
        run_a=a.run_id, run_b=b.run_id, matched=len(ids), only_a=len(before) - len(ids),
        only_b=len(after) - len(ids),
        accuracy_a=sum(c.before for c in changes) / n, accuracy_b=sum(c.after for c in changes) / n,
        regressions=[c for c in changes if c.before and not c.after],
        improvements=[c for c in changes if c.after and not c.before],
        mean_score_delta=statistics.fmean(c.delta for c in changes) if changes else 0.0,
        metric_deltas={k: b.metrics[k] - a.metrics[k] for k in a.metrics if k in b.metrics})
    comparison.mcnemar_p = mcnemar_exact(len(comparison.improvements),
                                         len(comparison.regressions))
    comparison.wilcoxon_p = wilcoxon_p([c.delta for c in changes])
    return comparison


def mcnemar_exact(improved: int, regressed: int) -> float:
    """Two-sided exact McNemar: under no change, a flip is either way with p = 1/2."""
    from scipy.stats import binomtest

    flips = improved + regressed
    return 1.0 if flips == 0 else float(binomtest(improved, flips, 0.5).pvalue)


def wilcoxon_p(deltas: list[float]) -> float:
    from scipy.stats import wilcoxon

    if not any(abs(d) > 1e-12 for d in deltas):
        return 1.0  # identical scores: no evidence of any change
    return float(wilcoxon(deltas, zero_method="wilcox").pvalue)


def paired_flips(a: EvalRun, b: EvalRun, scorer: str | None = None) -> tuple[int, int]:
    """Cases fixed and cases broken between two runs over the same cases."""
    comparison = compare_runs(a, b, scorer)
    return len(comparison.improvements), len(comparison.regressions)
