"""Evaluate phase: test an agent like software.

A **Suite** (cases + scorers + gates, from YAML) runs against a **Target** (an endpoint,
the router, a Python function, an agent app) with ``run_suite``; the **EvalRun** it
returns is published as JSON, HTML and an MLflow run, gated with ``check_gates`` and
compared with ``compare_runs``.

Names load on first use: pytest imports this package (our plugin) in every session.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Case": "types", "Context": "types", "Output": "types", "Score": "types",
    "ToolCall": "types",
    "BoundScorer": "scoring", "ScoreContext": "scoring", "scorer": "scoring",
    # Looked up through the package that registers the built-in scorers first.
    "resolve_scorer": "scorers", "registered_scorers": "scorers",
    "Suite": "suite", "load_suite": "suite",
    "CallableTarget": "targets", "HttpAppTarget": "targets", "OpenAITarget": "targets",
    "RouterTarget": "targets", "Target": "targets", "TargetError": "targets",
    "to_output": "targets",
    "open_target": "target_spec",
    "OutputCache": "cache",
    "run_suite": "runner", "run_suite_sync": "runner",
    "CaseResult": "results", "EvalRun": "results", "list_runs": "results",
    "load_run": "results", "wilson_interval": "results",
    "Gate": "gates", "check_gates": "gates", "parse_gate": "gates",
    "Comparison": "compare", "compare_runs": "compare",
    "publish": "publish", "render_html": "report_html",
    "QACase": "dataset", "load_cases": "dataset",
    "AgentEval": "pytest_plugin", "assert_score": "pytest_plugin",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'agentcycle.evals' has no attribute '{name}'")
    value = getattr(importlib.import_module(f"agentcycle.evals.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
