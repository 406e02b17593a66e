"""Where NATS is (the platform's, or the embedded server) and one way to connect to it."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

from agentcycle.errors import ServiceError
from agentcycle.messaging.server import NatsServer
from agentcycle.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

# One embedded server per store for the life of the process (nats_url), stopped at exit.
_process_servers: dict[str, NatsServer] = {}
_servers_lock = threading.Lock()


def nats_url(settings: Settings) -> str:
    """The platform's NATS (``NATS_URL`` / ``NATS_HOST``), else this data dir's embedded
    server, started (or reused) now and kept until the process exits."""
    if settings.nats_url:
        return settings.nats_url
    key = str(settings.nats_dir)
    with _servers_lock:
        server = _process_servers.get(key)
        if server is None or not server.running:
            server = _process_servers[key] = NatsServer.for_settings(settings).start()
    return server.url


@contextlib.contextmanager
def nats_session(settings: Settings) -> Iterator[str]:
    """The NATS URL for the ``with`` block: the platform's, or the embedded server, which
    is stopped on exit unless another process (or :func:`nats_url`) still uses it."""
    if settings.nats_url:
        yield settings.nats_url
        return
    with NatsServer.for_settings(settings) as server:
        yield server.url


async def connect(url: str, *, name: str | None = None, timeout: float = 5.0,
                  **options: Any) -> Any:
    """A nats-py connection; an unreachable server is one :class:`ServiceError`."""
    import nats
    from nats.errors import NoServersError

    async def quiet(exc: Exception) -> None:  # nats-py logs every reconnect at ERROR
        log.debug("nats %s: %s", url, exc)

    options.setdefault("error_cb", quiet)
    options.setdefault("reconnect_time_wait", 0.5)
    options.setdefault("max_reconnect_attempts", 60)
    try:
        # nats-py spends its whole reconnect budget on a first connect that fails
        # (60 x 0.5 s): a plain TCP probe first makes "nothing there" fail at once.
        await _probe(url, timeout)
        return await nats.connect(url, name=name, connect_timeout=timeout, **options)
    except (NoServersError, OSError, TimeoutError) as exc:
        raise ServiceError(
            f"NATS at {url} is unreachable ({type(exc).__name__}): start it, or unset "
            "NATS_URL/NATS_HOST to use the embedded server") from None


async def _probe(url: str, timeout: float) -> None:
    import asyncio
    from urllib.parse import urlparse

    first = url.split(",")[0].strip()
    parsed = urlparse(first if "://" in first else f"nats://{first}")
    _, writer = await asyncio.wait_for(
        asyncio.open_connection(parsed.hostname or "127.0.0.1", parsed.port or 4222), timeout)
    writer.close()


async def retry_transient(call: Callable[[], Awaitable[T]], within: float,
                          pause: float = 0.25) -> T:
    """``await call()``, again while NATS restarts (the request went to a server that
    stopped, JetStream not ready yet, the client reconnecting), for up to ``within``
    seconds; other errors, and the last transient one, propagate. For idempotent calls
    only: creating a stream or consumer, a publish with a message id, a KV watch."""
    import asyncio
    import time

    from nats.errors import (
        ConnectionReconnectingError,
        NoRespondersError,
        StaleConnectionError,
    )
    from nats.errors import TimeoutError as NatsTimeout
    from nats.js.errors import NoStreamResponseError, ServiceUnavailableError

    transient = (NatsTimeout, NoRespondersError, ConnectionReconnectingError,
                 StaleConnectionError, NoStreamResponseError, ServiceUnavailableError)
    deadline = time.monotonic() + within
    while True:
        try:
            return await call()
        except transient as exc:
            if time.monotonic() + pause >= deadline:
                raise
            log.debug("nats call failed (%s), retrying: NATS may be restarting", exc)
            await asyncio.sleep(pause)
