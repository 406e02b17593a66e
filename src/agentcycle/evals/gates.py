"""Gates: the checks a run must pass in CI, such as ``accuracy>=0.7``,
``keywords.mean>=0.8`` or ``p95_latency_ms<=2000``."""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass

from agentcycle.errors import ConfigError

_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt,
        "==": operator.eq, "!=": operator.ne}
_GATE = re.compile(r"^\s*([\w.:/-]+)\s*(>=|<=|==|!=|>|<)\s*(-?[\d.]+(?:e-?\d+)?)\s*(%?)\s*$")


@dataclass(frozen=True)
class Gate:
    metric: str
    op: str
    threshold: float

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.threshold:g}"


@dataclass(frozen=True)
class GateResult:
    gate: Gate
    value: float
    passed: bool


def parse_gate(text: str) -> Gate:
    match = _GATE.match(text)
    if not match:
        raise ConfigError(f"bad gate '{text}': write METRIC OP NUMBER, e.g. 'accuracy>=0.7' "
                          f"(ops: {' '.join(_OPS)})")
    metric, op, number, percent = match.groups()
    try:
        value = float(number) / (100 if percent else 1)
    except ValueError:
        raise ConfigError(f"bad gate '{text}': '{number}' is not a number") from None
    return Gate(metric, op, value)


def check_gates(metrics: dict[str, float], gates: list[str | Gate]) -> list[GateResult]:
    """Every gate against the run's metrics; an unknown metric is an error that lists them."""
    results = []
    for gate in gates:
        parsed = gate if isinstance(gate, Gate) else parse_gate(gate)
        if parsed.metric not in metrics:
            raise ConfigError(f"gate '{parsed}': unknown metric '{parsed.metric}' (metrics: "
                              f"{', '.join(sorted(metrics))})")
        value = metrics[parsed.metric]
        results.append(GateResult(parsed, value, bool(_OPS[parsed.op](value, parsed.threshold))))
    return results
