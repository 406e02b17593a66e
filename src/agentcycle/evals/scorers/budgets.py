"""Budget scorers: latency, cost and tokens against a maximum.

Within budget the value is 1; over it, the value falls as budget / measured, so a run
twice over budget scores 0.5. The maximum comes from the option or the case's metadata
(``max_ms``, ``max_usd``, ``max_tokens``).
"""

from __future__ import annotations

from agentcycle.errors import ConfigError
from agentcycle.evals.scoring import ScoreContext, scorer
from agentcycle.evals.types import Case, Output, Score


def _limit(case: Case, value: float | None, key: str, name: str) -> float:
    limit = value if value is not None else case.metadata.get(key)
    if limit is None:
        raise ConfigError(f"scorer '{name}' needs a budget: {name}({key}=...) "
                          f"or metadata.{key} in case '{case.id}'")
    limit = float(limit)
    if limit < 0:
        raise ConfigError(f"scorer '{name}': {key} must not be negative (got {limit})")
    return limit


def within_budget(measured: float, limit: float, unit: str) -> Score:
    if measured <= limit:
        return Score(value=1.0, passed=True, explanation=f"{measured:g} {unit} <= {limit:g}")
    value = limit / measured if measured > 0 else 0.0
    return Score(value=value, passed=False, explanation=f"{measured:g} {unit} > {limit:g}")


@scorer("latency_budget", threshold=1.0)
def latency_budget(case: Case, output: Output, ctx: ScoreContext, *,
                   max_ms: float | None = None) -> Score:
    """The case answered within ``max_ms`` milliseconds."""
    return within_budget(output.latency_ms, _limit(case, max_ms, "max_ms", "latency_budget"),
                         "ms")


@scorer("cost_budget", threshold=1.0)
def cost_budget(case: Case, output: Output, ctx: ScoreContext, *,
                max_usd: float | None = None) -> Score:
    """The case cost at most ``max_usd`` dollars."""
    return within_budget(output.cost_usd, _limit(case, max_usd, "max_usd", "cost_budget"), "USD")


_TOKENS = {"total": lambda o: o.prompt_tokens + o.completion_tokens,
           "prompt": lambda o: o.prompt_tokens, "completion": lambda o: o.completion_tokens}


@scorer("token_budget", threshold=1.0)
def token_budget(case: Case, output: Output, ctx: ScoreContext, *,
                 max_tokens: int | None = None, count: str = "total") -> Score:
    """The case used at most ``max_tokens`` tokens (``count``: total, prompt or completion)."""
    if count not in _TOKENS:
        raise ConfigError(f"token_budget count must be one of {sorted(_TOKENS)}, not {count!r}")
    limit = _limit(case, max_tokens, "max_tokens", "token_budget")
    return within_budget(_TOKENS[count](output), limit, f"{count} tokens")
