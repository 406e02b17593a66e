"""A SQLite cache of target outputs, keyed by the target and the case input.

Re-scoring a suite (a new scorer, a new threshold) then costs no model calls. The key
is the target's ``key`` (URL, model, prompt, parameters) plus the case input, so a
changed prompt or model never hits an old answer. Failed outputs are not cached.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from agentcycle.evals.targets import digest
from agentcycle.evals.types import Case, Output


class OutputCache:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # The runner touches the cache from its event loop thread only.
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS outputs (key TEXT PRIMARY KEY, "
                         "target TEXT NOT NULL, output TEXT NOT NULL, created REAL NOT NULL)")
        self.hits = 0

    @classmethod
    def default(cls, settings=None) -> OutputCache:
        from agentcycle.settings import Settings

        settings = settings or Settings()
        return cls(settings.home / "evals" / "cache.db")

    @staticmethod
    def key(target_key: str, case: Case) -> str:
        return digest(target_key, case.input)

    def get(self, target_key: str, case: Case) -> Output | None:
        row = self._db.execute("SELECT output FROM outputs WHERE key = ?",
                               (self.key(target_key, case),)).fetchone()
        if row is None:
            return None
        self.hits += 1
        return Output.model_validate_json(row[0])

    def put(self, target_key: str, case: Case, output: Output) -> None:
        if output.error:
            return
        self._db.execute("INSERT OR REPLACE INTO outputs VALUES (?, ?, ?, ?)",
                         (self.key(target_key, case), target_key, output.model_dump_json(),
                          time.time()))

    def close(self) -> None:
        self._db.close()
