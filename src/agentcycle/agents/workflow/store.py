"""Where workflows live: LangGraph's checkpointer (SQLite here, PostgreSQL on the platform)
and, beside it in the same database, the workflow's own tables:

- ``workflow_threads``: each thread's task and when it started (``list`` shows them);
- ``workflow_ledger``: side effects done before the approval, keyed ``thread_id:node``,
  so a node re-run after a crash finds its result instead of doing the effect again;
- ``workflow_outbox``: the approved answers, one per thread (the finalize side effect).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agentcycle.errors import ConfigError, MissingDependency, ServiceError
from agentcycle.settings import Settings

_POSTGRES = ("postgresql://", "postgres://")
_SQLITE = "sqlite:///"

_TABLES = (
    "CREATE TABLE IF NOT EXISTS workflow_threads (thread_id TEXT PRIMARY KEY, task TEXT NOT NULL,"
    " created_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS workflow_ledger (key TEXT PRIMARY KEY, thread_id TEXT NOT NULL,"
    " node TEXT NOT NULL, payload TEXT NOT NULL, created_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS workflow_outbox (thread_id TEXT PRIMARY KEY, answer TEXT NOT NULL,"
    " decision TEXT NOT NULL, created_at TEXT NOT NULL)",
)


def redact(uri: str) -> str:
    """The URI without its password, for messages."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    return uri.replace(f":{parts.password}@", ":***@", 1)


def is_postgres(uri: str) -> bool:
    return uri.startswith(_POSTGRES)


def _sqlite_path(uri: str) -> Path:
    path = Path(uri[len(_SQLITE):])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the workflow store at {path}: {exc}") from None
    return path


def _connect_sqlite(uri: str) -> sqlite3.Connection:
    # Graph nodes may run on LangGraph's worker threads; every use holds a lock.
    path = _sqlite_path(uri)
    conn = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
    try:
        conn.execute("PRAGMA journal_mode=WAL")  # readers (list/show) never block a graph
    except sqlite3.DatabaseError as exc:  # the first read of the file: garbage shows here
        conn.close()
        raise ConfigError(f"the workflow store {path} is not a usable SQLite database "
                          f"({exc}); move it away to start a new one") from None
    return conn


def _connect_postgres(uri: str) -> Any:
    try:
        import psycopg
        from psycopg.rows import dict_row
    except ImportError:
        raise MissingDependency("psycopg[binary]", "the PostgreSQL workflow store") from None
    where = urlsplit(uri)
    try:
        # PostgresSaver's requirements: autocommit, dict rows, no server-side prepares
        # (they break behind PgBouncer, which platforms put in front of PostgreSQL).
        return psycopg.connect(uri, autocommit=True, prepare_threshold=0, row_factory=dict_row,
                               connect_timeout=5)
    except psycopg.Error as exc:
        reason = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        raise ServiceError(f"cannot connect to PostgreSQL at {where.hostname}:"
                           f"{where.port or 5432} ({redact(uri)}): {reason or type(exc).__name__}"
                           ) from None


@contextlib.contextmanager
def store_errors(uri: str) -> Iterator[None]:
    """A database failing after we connected (PostgreSQL restarted, a locked or full SQLite
    file) is a ServiceError naming the store; the last checkpoint stays as it was."""
    try:
        yield
    except sqlite3.Error as exc:
        raise ServiceError(f"the workflow store {redact(uri)} failed: {exc}") from None
    except Exception as exc:
        if type(exc).__module__.startswith("psycopg"):
            raise ServiceError(f"the workflow store {redact(uri)} failed: "
                               f"{str(exc).strip() or type(exc).__name__}") from None
        raise


def _store_uri(settings: Settings) -> str:
    uri = settings.checkpoint_uri
    if not (is_postgres(uri) or uri.startswith(_SQLITE)):
        raise ConfigError(f"unsupported workflow store '{redact(uri)}': use postgresql://... "
                          "or sqlite:///PATH")
    return uri


@contextlib.contextmanager
def checkpointer(settings: Settings) -> Iterator[Any]:
    """LangGraph's durable checkpointer for ``settings.checkpoint_uri``: a ``PostgresSaver``
    for postgresql://, else a ``SqliteSaver`` (tables created on first use)."""
    uri = _store_uri(settings)
    if is_postgres(uri):
        try:
            from langgraph.checkpoint.postgres import PostgresSaver
        except ImportError:
            raise MissingDependency("langgraph-checkpoint-postgres",
                                    "the PostgreSQL workflow store") from None
        with _connect_postgres(uri) as conn:
            saver = PostgresSaver(conn)
            saver.setup()
            yield saver
        return
    try:
        from langgraph.checkpoint.sqlite import SqliteSaver
    except ImportError:
        raise MissingDependency("langgraph-checkpoint-sqlite", "the workflow store") from None
    conn = _connect_sqlite(uri)
    try:
        saver = SqliteSaver(conn)
        saver.setup()
        yield saver
    finally:
        conn.close()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Ledger:
    """The workflow's own tables (threads, side-effect ledger, outbox) in the same database
    as the checkpoints, on a connection of its own."""

    def __init__(self, settings: Settings):
        self.uri = _store_uri(settings)
        self._postgres = is_postgres(self.uri)
        self._conn = _connect_postgres(self.uri) if self._postgres else _connect_sqlite(self.uri)
        if not self._postgres:
            self._conn.isolation_level = None  # autocommit, like the PostgreSQL connection
        self._lock = threading.Lock()
        for statement in _TABLES:
            self._execute(statement)

    def _execute(self, sql: str, params: tuple = ()) -> list[tuple]:
        if self._postgres:
            sql = sql.replace("?", "%s")
        with self._lock:
            cursor = self._conn.execute(sql, params)
            rows = cursor.fetchall() if cursor.description else []
        return [tuple(row.values()) if isinstance(row, dict) else tuple(row) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- threads -----------------------------------------------------------------------
    def register(self, thread_id: str, task: str) -> None:
        self._execute("INSERT INTO workflow_threads VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                      (thread_id, task, _now()))

    def threads(self) -> list[tuple[str, str, str]]:
        """(thread_id, task, created_at), oldest first."""
        return self._execute("SELECT thread_id, task, created_at FROM workflow_threads "
                             "ORDER BY created_at, thread_id")

    # -- side effects before the approval ----------------------------------------------
    def once(self, thread_id: str, node: str, effect: Callable[[], Any]) -> Any:
        """``effect()``'s result, done at most once per ``thread_id:node`` (the idempotency
        key): a node re-run after a crash gets the recorded result back."""
        key = f"{thread_id}:{node}"
        found = self._execute("SELECT payload FROM workflow_ledger WHERE key = ?", (key,))
        if found:
            return json.loads(found[0][0])
        payload = json.dumps(effect(), default=str)
        self._execute("INSERT INTO workflow_ledger VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                      (key, thread_id, node, payload, _now()))
        # Two processes racing on one thread: the first record wins, both return it.
        found = self._execute("SELECT payload FROM workflow_ledger WHERE key = ?", (key,))
        return json.loads(found[0][0])

    def effects(self, thread_id: str) -> list[str]:
        """The nodes whose side effect was recorded for a thread."""
        rows = self._execute("SELECT node FROM workflow_ledger WHERE thread_id = ? ORDER BY key",
                             (thread_id,))
        return [row[0] for row in rows]

    # -- the outbox --------------------------------------------------------------------
    def deliver(self, thread_id: str, answer: str, decision: dict[str, Any]) -> None:
        """Write the approved answer once (a re-run finalize leaves the first one)."""
        self._execute("INSERT INTO workflow_outbox VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                      (thread_id, answer, json.dumps(decision), _now()))

    def delivered(self, thread_id: str) -> dict[str, Any] | None:
        rows = self._execute("SELECT answer, decision, created_at FROM workflow_outbox "
                             "WHERE thread_id = ?", (thread_id,))
        if not rows:
            return None
        answer, decision, created_at = rows[0]
        return {"answer": answer, "decision": json.loads(decision), "created_at": created_at}
