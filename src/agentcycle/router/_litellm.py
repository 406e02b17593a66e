"""LiteLLM, imported once the way agentcycle needs it: offline and quiet.

A leaf module: the router's pieces (transport, streaming, pricing, policies) import
LiteLLM through here, never through ``router.router``, so none of them closes a cycle.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any


class _StrandedLoggingWorker(logging.Filter):
    """Drops asyncio's "Task was destroyed but it is pending!" for LiteLLM's own
    logging worker, and nothing else.

    LiteLLM keeps one logging worker per process, bound to one event loop. When a
    second loop calls it (a router's loop thread, then ``agent.run()``'s
    ``asyncio.run``, or a server's loop), LiteLLM moves the queued log items to a new
    queue and forgets the old worker task without cancelling it; when the garbage
    collector finds it, asyncio logs an ERROR. Nothing is lost (its queue was carried
    over), so the line only alarms (upstream: BerriAI/litellm#36548, #24733).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or not str(record.msg).startswith(
                "Task was destroyed but it is pending"):
            return True
        return "LoggingWorker._worker_loop" not in record.getMessage()


_QUIET = _StrandedLoggingWorker()


@functools.cache  # called on every request: the setup below runs once
def import_litellm() -> Any:
    # LiteLLM fetches its price map from GitHub at import unless told not to.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    logging.getLogger("asyncio").addFilter(_QUIET)
    return litellm
