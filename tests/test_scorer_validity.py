"""The scorers agree with the human labels of benchmarks/data/scorer_validity.yaml.

A regression in a deterministic or tool scorer (one that starts passing unfaithful
answers or wrong tool calls, or failing right ones) fails here. The LLM judge's
agreement is measured by benchmarks/scorer_validity.py, not tested (it needs the model).
"""

import asyncio
from pathlib import Path

import pytest

from agentcycle.errors import DataError
from agentcycle.evals.scorers.validity import (
    DETERMINISTIC,
    agreement,
    by_scorer,
    load_labelled,
    parse_labelled,
    score_labelled,
)
from agentcycle.evals.scoring import ScoreContext

DATA = Path(__file__).resolve().parent.parent / "benchmarks" / "data" / "scorer_validity.yaml"
GOAL = 0.85


@pytest.fixture(scope="module")
def labelled():
    return load_labelled(DATA)


def test_the_labelled_set_is_large_and_balanced(labelled):
    assert len(labelled) >= 60
    groups = by_scorer(labelled)
    assert len(groups["faithfulness"]) >= 20
    tool_cases = sum(len(groups[n]) for n in ("tool_name", "tool_args", "tool_f1", "tool_order"))
    assert tool_cases >= 20
    for name, items in groups.items():  # every scorer sees positives and negatives
        assert {i.label for i in items} == {True, False}, name
    assert len({i.id for i in labelled}) == len(labelled)


def test_deterministic_and_tool_scorers_agree_with_the_labels(labelled, embedder):
    ctx = ScoreContext(embedder=embedder)
    report = []
    for name, items in by_scorer(labelled).items():
        if name not in DETERMINISTIC:
            continue
        judged = asyncio.run(score_labelled(items, ctx))
        agree, total = agreement(judged)
        misses = [j.item.id for j in judged if not j.agrees]
        report.append((name, agree / total, misses))
    low = [r for r in report if r[1] < GOAL]
    assert not low, f"scorers below {GOAL} agreement: {low}"
    assert len(report) == len(DETERMINISTIC)


def test_a_malformed_labelled_case_is_one_clear_error():
    with pytest.raises(DataError, match="bad labelled case 'x'"):
        parse_labelled({"cases": [{"id": "x", "label": True}]})  # no scorer
    with pytest.raises(DataError, match="unknown context 'nope'"):
        parse_labelled({"cases": [{"id": "y", "scorer": "exact", "label": True,
                                   "contexts": ["nope"]}]})
