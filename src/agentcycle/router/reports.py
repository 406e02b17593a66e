"""What the accounting log says: per route/backend stats, and A/B arms compared.

`ab_report` compares each arm with the route's first arm: Welch's t-test on the
feedback scores (quality), and on latency; a small p-value means the difference is
unlikely to be chance.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import time
import warnings
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from agentcycle.errors import ConfigError
from agentcycle.router.accounting import RequestRecord, reading, rows


@dataclass
class StatsRow:
    route: str
    backend: str
    requests: int
    errors: int
    p50_ms: float
    p95_ms: float
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float

    def as_dict(self) -> dict:
        return asdict(self)


def parse_since(since: str | None) -> float | None:
    """`30m`, `2h`, `7d` ago, or an ISO date/time (UTC) -> a unix time."""
    if not since:
        return None
    if match := re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd])", since.strip()):
        seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]
        return time.time() - float(match[1]) * seconds
    try:
        when = dt.datetime.fromisoformat(since)
    except ValueError:
        raise ConfigError(f"--since '{since}': use 30m, 2h, 7d or an ISO date") from None
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()


def _p(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


def stats(path: str | Path, since: str | None = None) -> list[StatsRow]:
    """Requests, errors, latency percentiles, tokens and cost by route and backend."""
    groups: dict[tuple[str, str], list[RequestRecord]] = defaultdict(list)
    for record in rows(path, parse_since(since)):
        groups[(record.route, record.backend or "-")].append(record)
    result = []
    for (route, backend), records in sorted(groups.items()):
        ok = [r.latency_ms for r in records if r.status == "ok"]
        result.append(StatsRow(
            route=route, backend=backend, requests=len(records),
            errors=sum(r.status != "ok" for r in records),
            p50_ms=_p(ok, 50), p95_ms=_p(ok, 95),
            prompt_tokens=sum(r.prompt_tokens or 0 for r in records),
            completion_tokens=sum(r.completion_tokens or 0 for r in records),
            cost_usd=sum(r.cost_usd or 0 for r in records)))
    return result


@dataclass
class ArmRow:
    route: str
    arm: str
    n: int
    errors: int
    rated: int
    quality_mean: float | None
    cost_usd_mean: float
    p50_ms: float
    quality_p_value: float | None  # vs the route's first arm (Welch's t-test)
    latency_p_value: float | None

    def as_dict(self) -> dict:
        return asdict(self)


def _welch(a: list[float], b: list[float]) -> float | None:
    if len(a) < 2 or len(b) < 2:
        return None
    if np.ptp(a) == 0 and np.ptp(b) == 0:  # both constant: no variance to test against
        return 1.0 if a[0] == b[0] else 0.0
    from scipy import stats as scipy_stats

    with warnings.catch_warnings():  # near-constant samples: scipy warns, p is still fine
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(scipy_stats.ttest_ind(a, b, equal_var=False).pvalue)
    return 1.0 if math.isnan(p) else p


def ab_report(path: str | Path, since: str | None = None) -> list[ArmRow]:
    """Per A/B arm: n, quality (mean feedback score), mean cost, p50 latency, p-values.

    Every request assigned to an arm counts in its ``n``; only those the arm served
    count for quality, cost and latency (a fallback to the other arm would blur the
    comparison), and the rest are the arm's errors, so an arm whose backend is down
    shows up as failing instead of vanishing from the report."""
    with reading(path) as db:
        scores: dict[str, list[float]] = defaultdict(list)
        for request_id, score in db.execute("SELECT request_id, score FROM feedback"):
            scores[request_id].append(float(score))
    arms: dict[str, dict[str, list[RequestRecord]]] = defaultdict(lambda: defaultdict(list))
    for record in rows(path, parse_since(since)):
        if record.arm:
            arms[record.route][record.arm].append(record)
    report = []
    for route, by_arm in sorted(arms.items()):
        baseline = None
        for arm, records in sorted(by_arm.items()):
            ok = [r for r in records if r.status == "ok" and r.backend == arm]
            quality = [float(np.mean(scores[r.id])) for r in ok if r.id in scores]
            latency = [r.latency_ms for r in ok]
            if baseline is None:
                baseline = (quality, latency)
                p_quality = p_latency = None
            else:
                p_quality, p_latency = _welch(quality, baseline[0]), _welch(latency, baseline[1])
            report.append(ArmRow(
                route=route, arm=arm, n=len(records), errors=len(records) - len(ok),
                rated=len(quality), quality_mean=float(np.mean(quality)) if quality else None,
                cost_usd_mean=float(np.mean([r.cost_usd or 0 for r in ok])) if ok else 0.0,
                p50_ms=_p(latency, 50), quality_p_value=p_quality, latency_p_value=p_latency))
    return report
