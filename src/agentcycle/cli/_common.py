"""What every command shares: one-line errors, the settings, JSON output."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from enum import StrEnum
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from agentcycle.errors import AgentcycleError
from agentcycle.settings import Settings

console = Console()
err_console = Console(stderr=True)


def debug_enabled() -> bool:
    return os.environ.get("AGENTCYCLE_DEBUG", "") not in ("", "0", "false")


def friendly_errors(fn: Callable) -> Callable:
    """Expected errors become one line on stderr and exit 1 (tracebacks with AGENTCYCLE_DEBUG)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AgentcycleError as exc:
            if debug_enabled():
                raise
            # escape: a message naming "[section]" or "[::1]" is text, not Rich markup.
            err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False,
                              soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper


def stop_on_sigterm() -> None:
    """Treat SIGTERM (systemd, Kubernetes, `kill`) and SIGHUP (a closed terminal) like
    Ctrl-C, so `with` blocks stop the servers they started instead of orphaning them.
    A second signal (SIGINT too) while they stop stops every child at once first: the
    interrupt it raises would otherwise cut their orderly stop short."""
    import atexit
    import gc
    import signal

    from agentcycle._processes import stop_all

    received: list[int] = []

    def interrupt(signum: int, frame: Any) -> None:
        received.append(signum)
        if len(received) > 1:
            stop_all(grace=2)
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        if signal.getsignal(sig) is not signal.SIG_IGN:  # nohup, `cmd &`: left ignored
            signal.signal(sig, interrupt)
    # Once the servers are stopped and the exit handlers registered after this one ran
    # (atexit runs last-in first-out), skip the interpreter's final garbage collection:
    # over the heap of torch, transformers, Gradio and MLflow it took 9 of the app's
    # 11 s to exit after SIGTERM here (1.7 s without). The OS frees the memory anyway.
    atexit.register(gc.freeze)


def settings() -> Settings:
    from pydantic import ValidationError

    from agentcycle.errors import ConfigError

    try:
        return Settings()
    except ValidationError as exc:
        error = exc.errors()[0]
        raise ConfigError(f"invalid setting {error['loc'][0]}: {error['msg']}") from None


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def quiet_libraries() -> None:
    """Library chatter (progress bars, warnings) would drown our own output."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    import warnings

    warnings.filterwarnings("ignore")
    # bitsandbytes (imported by peft, which transformers imports) looks up a hub kernel
    # on AVX512-BF16 CPUs; offline it warns twice and falls back to its own kernel.
    for name in ("mlflow", "LiteLLM", "litellm", "httpx", "transformers", "alembic",
                 "sentence_transformers", "huggingface_hub", "bitsandbytes", "kernels"):
        logging.getLogger(name).setLevel(logging.ERROR)


class AnswerForm(StrEnum):
    """Q&A training answers: as written, or quoting their ``evidence`` sentence first
    (:func:`agentcycle.finetune.dataprep.quote_then_answer`)."""

    quote = "quote"
    short = "short"
