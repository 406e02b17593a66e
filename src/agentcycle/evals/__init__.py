"""Evaluate phase: score an agent's answers on a Q&A split."""

from agentcycle.evals.dataset import QACase, load_cases
from agentcycle.evals.runner import CaseResult, EvalSummary, evaluate, log_to_mlflow, summarize
from agentcycle.evals.scorers import embedding_similarity, exact_match, keyword_match, normalize

__all__ = [
    "CaseResult", "EvalSummary", "QACase", "embedding_similarity", "evaluate", "exact_match",
    "keyword_match", "load_cases", "log_to_mlflow", "normalize", "summarize",
]
