"""The cost/quality curve of a quality router on held-out data, as RouteLLM reports it.

For every share of strong calls (0, 1/n, ... 1) the router sends the requests with the
highest predicted ``p_fail`` to the strong model; quality is the strong model's result
on those and the cheap model's on the rest. Random routing, in expectation, is the
straight line between the two models. Summaries (RouteLLM's names):

- PGR, performance gap recovered: ``(quality - cheap) / (strong - cheap)``;
- APGR: the area under PGR over the strong-call share (random routing: 0.5);
- CPT(x%): the smallest share of strong calls reaching a PGR of x% (random: x%).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agentcycle.errors import DataError


@dataclass
class CurveResult:
    shares: np.ndarray  # k / n for k = 0 .. n strong calls
    quality: np.ndarray  # learned routing
    quality_random: np.ndarray  # random routing, in expectation
    cost: np.ndarray  # USD over the n requests, learned routing
    cost_random: np.ndarray
    cheap_quality: float
    strong_quality: float
    cost_unit: str = "strong calls"

    @property
    def n(self) -> int:
        return len(self.shares) - 1

    @property
    def gap(self) -> float:
        return self.strong_quality - self.cheap_quality

    def pgr(self, random: bool = False) -> np.ndarray:
        quality = self.quality_random if random else self.quality
        if self.gap <= 0:
            return np.full_like(quality, np.nan)
        return (quality - self.cheap_quality) / self.gap

    @property
    def apgr(self) -> float:
        return _area(self.shares, self.pgr())

    @property
    def apgr_random(self) -> float:
        return _area(self.shares, self.pgr(random=True))

    def cpt(self, fraction: float = 0.5, random: bool = False) -> float:
        """Share of strong calls needed to recover ``fraction`` of the quality gap."""
        reached = np.nonzero(self.pgr(random) >= fraction - 1e-12)[0]
        return float(self.shares[reached[0]]) if len(reached) else float("nan")

    def at_share(self, share: float) -> dict[str, float]:
        k = int(round(share * self.n))
        return {"share": float(self.shares[k]), "quality": float(self.quality[k]),
                "quality_random": float(self.quality_random[k]), "cost": float(self.cost[k]),
                "cost_random": float(self.cost_random[k]), "pgr": float(self.pgr()[k])}

    def summary(self) -> dict[str, Any]:
        return {"n": self.n, "cheap_quality": self.cheap_quality,
                "strong_quality": self.strong_quality, "apgr": self.apgr,
                "apgr_random": self.apgr_random, "cpt50": self.cpt(0.5),
                "cpt50_random": self.cpt(0.5, random=True), "cpt80": self.cpt(0.8),
                "cpt80_random": self.cpt(0.8, random=True),
                "strong_only_cost": float(self.cost[-1])}

    def plot(self, path: str | Path, title: str = "Quality router on held-out data",
             operating_share: float | None = None) -> Path:
        """Two panels: quality against the strong-call share, and against cost."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
        for ax, x, xr, label in ((left, self.shares * 100, self.shares * 100,
                                  "share of calls to the strong model (%)"),
                                 (right, self.cost, self.cost_random,
                                  f"cost ({self.cost_unit})")):
            ax.plot(x, self.quality, label=f"learned router (APGR {self.apgr:.2f})",
                    color="tab:blue")
            ax.plot(xr, self.quality_random, "--", color="gray",
                    label=f"random routing (APGR {self.apgr_random:.2f})")
            ax.axhline(self.cheap_quality, color="tab:red", lw=0.8, ls=":", label="cheap only")
            ax.axhline(self.strong_quality, color="tab:green", lw=0.8, ls=":",
                       label="strong only")
            ax.set_xlabel(label)
            ax.set_ylabel("quality (share of cases passed)")
            ax.set_ylim(0, 1.02)
            ax.grid(alpha=0.3)
        cpt = self.cpt(0.5)
        if not np.isnan(cpt):
            half = self.cheap_quality + self.gap / 2
            left.plot([cpt * 100], [half], "o", color="tab:blue")
            left.annotate(f"CPT(50%) = {cpt:.0%}", (cpt * 100, half), xytext=(8, -14),
                          textcoords="offset points")
        if operating_share is not None:
            left.axvline(operating_share * 100, color="tab:purple", lw=0.8,
                         label=f"calibrated share {operating_share:.0%}")
        left.legend(loc="lower right", fontsize=8)
        fig.suptitle(title)
        fig.tight_layout()
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(target, dpi=110)
        plt.close(fig)
        return target


def _area(x: np.ndarray, y: np.ndarray) -> float:
    if np.isnan(y).any():
        return float("nan")
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)))


def cost_quality_curve(p_fail, cheap_passed, strong_passed=None, *, cheap_cost=None,
                       strong_cost=None, cost_unit: str | None = None) -> CurveResult:
    """The curve for held-out predictions ``p_fail`` and both models' per-case results.

    ``strong_passed`` defaults to the upper bound (the strong model passes every case);
    costs are per request, in ``cost_unit`` (default: 0 for cheap, 1 per strong call).
    """
    p = np.asarray(p_fail, dtype=float)
    n = len(p)
    cheap = _vector(cheap_passed, n, "cheap_passed")
    strong = np.ones(n) if strong_passed is None else _vector(strong_passed, n, "strong_passed")
    c_cost = np.zeros(n) if cheap_cost is None else _vector(cheap_cost, n, "cheap_cost")
    s_cost = np.ones(n) if strong_cost is None else _vector(strong_cost, n, "strong_cost")
    if n == 0:
        raise DataError("no held-out cases to draw a cost/quality curve from")
    order = np.argsort(-p, kind="stable")  # most likely to fail goes strong first
    shares = np.arange(n + 1) / n
    quality = (cheap.sum() + _cumsum0(strong[order] - cheap[order])) / n
    cost = c_cost.sum() + _cumsum0(s_cost[order] - c_cost[order])
    q_cheap, q_strong = float(cheap.mean()), float(strong.mean())
    return CurveResult(
        shares=shares, quality=quality, quality_random=q_cheap + shares * (q_strong - q_cheap),
        cost=cost, cost_random=c_cost.sum() + shares * (s_cost.sum() - c_cost.sum()),
        cheap_quality=q_cheap, strong_quality=q_strong,
        cost_unit=cost_unit or ("strong calls" if strong_cost is None else "USD"))


def _cumsum0(values: np.ndarray) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(values)])


def _vector(values, n: int, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.shape != (n,):
        raise DataError(f"{name} has {array.size} values for {n} cases")
    return array
