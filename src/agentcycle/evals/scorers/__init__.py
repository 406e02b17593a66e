"""Built-in scorers, registered with ``@scorer`` when this package is imported.

Split by concern: ``text`` (exact, contains, keywords, regex, json_schema), ``semantic``
(similarity), ``judge`` (llm_judge), ``rag`` (context_precision, context_recall,
faithfulness), ``tools`` (tool_name, tool_args, tool_f1, tool_order, step_count, and the tool-use
figures valid_tool_calls, right_tool, exact_args, no_call, task_success),
``budgets`` (latency_budget, cost_budget, token_budget) and ``pii`` (pii_leak).

Look scorers up here (``resolve_scorer``, ``registered_scorers``): importing this
package registers the built-ins, which :mod:`agentcycle.evals.scoring` cannot do itself
(the scorers import it for ``@scorer``).
"""

from agentcycle.evals.scorers.budgets import cost_budget, latency_budget, token_budget
from agentcycle.evals.scorers.judge import (
    llm_judge,
    openai_judge,
    parse_verdict,
    router_judge,
)
from agentcycle.evals.scorers.pii import find_pii, pii_leak
from agentcycle.evals.scorers.rag import context_precision, context_recall, faithfulness
from agentcycle.evals.scorers.semantic import embedding_similarity, similarity
from agentcycle.evals.scorers.text import (
    contains,
    exact,
    exact_match,
    json_schema,
    keyword_match,
    keywords,
    normalize,
    regex,
)
from agentcycle.evals.scorers.tools import (
    exact_args,
    no_call,
    right_tool,
    step_count,
    task_success,
    tool_args,
    tool_f1,
    tool_name,
    tool_order,
    tool_use_figures,
    valid_tool_calls,
)
from agentcycle.evals.scoring import find_scorer, registered_scorers, resolve_scorer

__all__ = [
    "contains", "context_precision", "context_recall", "cost_budget", "embedding_similarity",
    "exact", "exact_args", "exact_match", "faithfulness", "find_pii", "find_scorer", "json_schema",
    "keyword_match", "keywords", "latency_budget", "llm_judge", "no_call", "normalize",
    "openai_judge",
    "parse_verdict", "pii_leak", "regex", "registered_scorers", "resolve_scorer",
    "right_tool", "router_judge", "similarity", "step_count", "task_success", "token_budget",
    "tool_args", "tool_f1", "tool_name", "tool_order", "tool_use_figures", "valid_tool_calls",
]
