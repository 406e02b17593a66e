"""What a call costs: provider prices for cloud models, energy for local ones."""

from __future__ import annotations


def price_per_1k(cost_usd: float, tokens: int) -> float:
    return 1000 * cost_usd / tokens if tokens else 0.0


def local_cost(latency_s: float, energy_usd_per_hour: float) -> float:
    """A local call costs the machine's time at the configured hourly price (0 by default)."""
    return energy_usd_per_hour * latency_s / 3600
