"""Typed errors whose messages say what is wrong and how to fix it.

The CLI prints an :class:`AgentcycleError` as one line and exits non-zero; anything
else is a bug and keeps its traceback (or every error does, with AGENTCYCLE_DEBUG=1).
"""

from __future__ import annotations


class AgentcycleError(Exception):
    """Base class for expected, user-facing errors."""


class ConfigError(AgentcycleError):
    """A setting, file or argument is invalid."""


class DataError(AgentcycleError):
    """An input file or folder is missing, empty or malformed."""


class ModelError(AgentcycleError):
    """A model cannot be found, loaded or served."""


class ServiceError(AgentcycleError):
    """A service (model server, Qdrant, MLflow, LiteLLM ...) is unreachable or failed."""


class MissingDependency(AgentcycleError):
    """An optional dependency is not installed."""

    def __init__(self, package: str, feature: str, extra: str | None = None):
        how = f"pip install 'agentcycle[{extra}]'" if extra else f"pip install {package}"
        super().__init__(f"{feature} needs the '{package}' package: {how}")


def first_line(exc: BaseException) -> str:
    """An exception's message as one line (its first), else its type's name: how a
    library's error is quoted inside one of ours."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
