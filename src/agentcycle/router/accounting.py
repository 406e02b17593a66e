"""Every routed request in one SQLite log (like `llm`'s logs.db), written off the hot path.

The proxy hands each record to a queue; one background thread writes them in batches
(WAL mode, one transaction per batch), so a request never waits for the disk. Budgets,
`agentcycle router stats` and `ab-report` read the same file.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path

from agentcycle.errors import DataError

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY, time REAL NOT NULL, day TEXT NOT NULL, route TEXT NOT NULL,
    backend TEXT, model TEXT, reason TEXT, arm TEXT, sticky_key TEXT,
    prompt_tokens INTEGER, completion_tokens INTEGER, cost_usd REAL, latency_ms REAL,
    status TEXT NOT NULL, error TEXT, streamed INTEGER, attempts INTEGER
);
CREATE INDEX IF NOT EXISTS requests_route_day ON requests(route, day);
CREATE INDEX IF NOT EXISTS requests_time ON requests(time);
CREATE TABLE IF NOT EXISTS feedback (
    request_id TEXT NOT NULL, time REAL NOT NULL, score REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_request ON feedback(request_id);
PRAGMA user_version = 1;
"""


@dataclass
class RequestRecord:
    """One row of the `requests` table."""

    id: str
    time: float
    day: str
    route: str
    backend: str | None = None
    model: str | None = None
    reason: str | None = None
    arm: str | None = None
    sticky_key: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    status: str = "ok"
    error: str | None = None
    streamed: bool = False
    attempts: int = 1


_COLUMNS = [f.name for f in fields(RequestRecord)]
_INSERT = (f"INSERT OR REPLACE INTO requests ({', '.join(_COLUMNS)}) "
           f"VALUES ({', '.join('?' for _ in _COLUMNS)})")


def connect(path: Path) -> sqlite3.Connection:
    """The log, its schema created; an unusable path (not a database, a directory, no
    permission) is one DataError line for the CLI and the proxy's start-up."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, timeout=10, check_same_thread=False)
    except (OSError, sqlite3.Error) as exc:
        raise DataError(f"cannot open the router log {path}: {exc}") from None
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable enough, much faster
        db.executescript(SCHEMA)
    except sqlite3.Error as exc:
        db.close()
        raise DataError(f"cannot use the router log {path}: {exc}") from None
    return db


class AccountingLog:
    """A queue in front of the DB: ``add`` costs microseconds, a thread does the writes."""

    def __init__(self, path: str | Path, flush_every_s: float = 0.25):
        self.path = Path(path)
        connect(self.path).close()  # create the schema now: errors surface at start-up
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._flush_every_s = flush_every_s
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="router-accounting",
                                        daemon=True)
        self._closed = False
        self._thread.start()
        atexit.register(self.close)

    def add(self, record: RequestRecord) -> None:
        self._queue.put(("request", astuple_fast(record)))

    def add_feedback(self, request_id: str, score: float) -> None:
        self._queue.put(("feedback", (request_id, time.time(), float(score))))

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything queued so far is on disk."""
        if self._closed:
            return
        done = threading.Event()
        self._queue.put(("flush", done))
        self._wake.set()
        done.wait(timeout)

    def close(self) -> None:
        if self._closed:
            return
        self.flush()
        self._closed = True
        self._queue.put(("stop", None))
        self._wake.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        db = connect(self.path)
        try:
            while True:
                batch = [self._queue.get()]
                # Let a burst gather into one transaction; a flush cuts the wait short.
                self._wake.wait(self._flush_every_s)
                self._wake.clear()
                with contextlib.suppress(queue.Empty):
                    while True:
                        batch.append(self._queue.get_nowait())
                if not self._write(db, batch):
                    return
        finally:
            db.close()

    def _write(self, db: sqlite3.Connection, batch: list[tuple[str, object]]) -> bool:
        requests = [item for kind, item in batch if kind == "request"]
        feedback = [item for kind, item in batch if kind == "feedback"]
        try:
            with db:
                db.executemany(_INSERT, requests)
                db.executemany("INSERT INTO feedback VALUES (?, ?, ?)", feedback)
        except sqlite3.Error as exc:  # losing a log batch must not take the proxy down
            log.error("router accounting: could not write %d rows: %s", len(batch), exc)
        for kind, item in batch:
            if kind == "flush":
                item.set()  # type: ignore[attr-defined]
        return not any(kind == "stop" for kind, _ in batch)


def open_log(log_path: str | Path | None | bool) -> AccountingLog | None:
    """The router's log: True is <AGENTCYCLE_HOME>/router.db, False or None none."""
    if log_path is False or log_path is None:
        return None
    if log_path is True:
        from agentcycle.settings import Settings

        log_path = Settings().home.resolve() / "router.db"
    return AccountingLog(log_path)


def astuple_fast(record: RequestRecord) -> tuple:
    # dataclasses.astuple deep-copies; the record holds only scalars.
    return tuple(getattr(record, name) for name in _COLUMNS)


@contextlib.contextmanager
def reading(path: str | Path) -> Iterator[sqlite3.Connection]:
    path = Path(path)
    if not path.exists():
        raise DataError(f"no router log at {path}: serve or call the router first")
    db = connect(path)
    db.row_factory = sqlite3.Row
    try:
        yield db
    finally:
        db.close()


def spent(path: Path, route: str, day: str) -> float:
    """What a route has spent on a UTC day, as recorded."""
    if not path.exists():
        return 0.0
    with reading(path) as db:
        row = db.execute("SELECT COALESCE(SUM(cost_usd), 0) FROM requests "
                         "WHERE route = ? AND day = ?", (route, day)).fetchone()
    return float(row[0])


def request_exists(path: Path, request_id: str) -> bool:
    with reading(path) as db:
        return db.execute("SELECT 1 FROM requests WHERE id = ?", (request_id,)).fetchone() \
            is not None


def rows(path: str | Path, since: float | None = None) -> list[RequestRecord]:
    with reading(path) as db:
        found = db.execute("SELECT * FROM requests WHERE time >= ? ORDER BY time",
                           (since or 0.0,)).fetchall()
    return [RequestRecord(**dict(row)) for row in found]
