"""The agent's tools: plain typed Python functions. The model is offered each one under
its name, with a JSON schema built from the signature and the docstring (first line: what
it does; ``Args:``: each parameter). A ``ValueError`` goes back to the model as the
tool's error, so say in it how to call the tool correctly.

Add a function here and to ``TOOLS``; ``tests/test_tools.py`` shows how to test one.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from .knowledge import search

# The rates of docs/shipping.md, in one place for the tool and its tests.
STANDARD_BASE_EUR, STANDARD_PER_KG_EUR = 4.90, 1.20
EXPRESS_BASE_EUR, EXPRESS_PER_KG_EUR = 12.50, 2.00
FREE_STANDARD_FROM_EUR = 75.0


def shipping_cost(weight_kg: float, express: bool = False, order_total_eur: float = 0.0
                  ) -> float:
    """Compute the shipping cost of an order in EUR.

    Args:
        weight_kg: The parcel's weight in kilograms.
        express: True for next-day express shipping, False for standard.
        order_total_eur: The order's value in EUR (standard shipping is free above 75).
    """
    if weight_kg <= 0:
        raise ValueError("weight_kg must be a positive number of kilograms, e.g. 2.5")
    if not express and order_total_eur > FREE_STANDARD_FROM_EUR:
        return 0.0
    base, per_kg = ((EXPRESS_BASE_EUR, EXPRESS_PER_KG_EUR) if express
                    else (STANDARD_BASE_EUR, STANDARD_PER_KG_EUR))
    return round(base + per_kg * weight_kg, 2)


def days_between(start: str, end: str) -> int:
    """Count the days from one date to another (e.g. delivery to today, for returns).

    Args:
        start: The first date, as YYYY-MM-DD.
        end: The second date, as YYYY-MM-DD.
    """
    try:
        first, second = date.fromisoformat(start), date.fromisoformat(end)
    except ValueError:
        raise ValueError("give both dates as YYYY-MM-DD, e.g. 2026-03-01") from None
    return (second - first).days


def search_docs_tool(docs_dir: Path) -> Callable[[str], list[dict[str, Any]]]:
    """The ``search_docs`` tool, reading ``docs_dir``."""

    def search_docs(query: str) -> list[dict[str, Any]]:
        """Search the support handbook (returns, shipping, warranty) for the closest passage.

        Args:
            query: What to look for, in a few words, e.g. "return window".
        """
        found = search(docs_dir, query, k=1)
        if not found:
            raise ValueError(f"nothing in the handbook matches '{query}': try other words")
        return [{"source": f"{p.source} {p.heading}".strip(), "text": p.text} for p in found]

    return search_docs


def tools(docs_dir: Path) -> list[Callable[..., Any]]:
    """Every tool the agent is offered."""
    return [search_docs_tool(docs_dir), shipping_cost, days_between]
