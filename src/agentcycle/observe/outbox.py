"""No lost runs when MLflow is down: every run is kept on disk first, MLflow gets a copy.

A :class:`RunRecorder` writes what a fine-tune or an eval logs (tags, params, metrics
with their step and timestamp, tables, artifacts) to a journal under
``<data dir>/outbox/<id>/`` and, while MLflow answers, to the MLflow run at the same
time. When MLflow is unreachable at the start, or stops answering mid-run, the run goes
on: the journal keeps the rest (artifacts copied beside it) and the entry stays in the
outbox. :func:`publish_pending` replays each entry later, idempotently: it creates the
run once (or continues the one a live start made), logs only the params and metric
points the run lacks and overwrites artifacts in place, then removes the entry, so
publishing twice never duplicates a run or a point.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentcycle._jsonl import open_journal
from agentcycle.errors import first_line
from agentcycle.observe._outbox_files import (
    ENTRY,
    ID_TAG,
    METRICS,
    client_for,
    open_run,
    outbox_dir,
    replay,
    write_json,
)
from agentcycle.observe.tracing import unreachable
from agentcycle.settings import Settings

__all__ = ["RunRecorder", "pending", "publish_pending", "unreachable"]

# One quick try per call while a run is live: a dead server must not hold a training
# step for MLflow's default seven retries (minutes). The user's own values win.
_QUICK = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
          "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


@contextlib.contextmanager
def quick_requests() -> Iterator[None]:
    """MLflow's HTTP client with one short retry, for calls made in the middle of a run."""
    saved = {name: os.environ.get(name) for name in _QUICK}
    os.environ.update({k: v for k, v in _QUICK.items() if saved[k] is None})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)


class RunRecorder:
    """One MLflow run, journaled. ``live`` while MLflow takes every call."""

    def __init__(self, folder: Path, entry: dict, settings: Settings, client: Any = None):
        self.folder, self.entry, self.client = folder, entry, client
        self.settings = settings

    @classmethod
    def start(cls, settings: Settings, run_name: str, *, run_id: str | None = None,
              entry_id: str | None = None, write_back: tuple[Path, str] | None = None,
              origin: str = "") -> RunRecorder:
        """Open the journal (``entry_id``'s when resuming) and, if MLflow answers, the
        MLflow run (``run_id``'s when resuming)."""
        folder = outbox_dir(settings) / (entry_id or f"{time.strftime('%Y%m%d-%H%M%S')}-"
                                                    f"{uuid.uuid4().hex[:6]}")
        old = folder / ENTRY
        entry = json.loads(old.read_text()) if old.is_file() else {
            "id": folder.name, "run_name": run_name, "origin": origin, "run_id": run_id,
            "state": "open", "error": None, "tags": {ID_TAG: folder.name}, "params": {},
            "artifacts": [], "tables": [],
            "write_back": [str(write_back[0]), write_back[1]] if write_back else None}
        entry["state"] = "open"
        folder.mkdir(parents=True, exist_ok=True)
        recorder = cls(folder, entry, settings)
        if not entry["error"]:  # a journal that went offline is replayed whole at the end
            recorder._connect(settings)
        recorder._save()
        return recorder

    @property
    def live(self) -> bool:
        return self.client is not None

    @property
    def run_id(self) -> str | None:
        return self.entry["run_id"]

    def _connect(self, settings: Settings) -> None:
        error = unreachable(settings.tracking_uri)
        if error:
            self.entry["error"] = error
            return
        try:
            with quick_requests():
                self.client = client_for(settings)
                run = open_run(self.client, settings, self.entry)
            self.entry["run_id"] = run
            self.entry["tracking_uri"] = settings.tracking_uri
        except Exception as exc:  # noqa: BLE001 - MLflow's, HTTP's, SQLAlchemy's errors
            self._offline(exc)

    def _offline(self, exc: BaseException) -> None:
        self.client = None
        self.entry["error"] = str(exc).splitlines()[0][:300] if str(exc) else repr(exc)

    def _call(self, method: str, *args: Any, **kwargs: Any) -> bool:
        """Send one call to MLflow; False (and offline from now on) when it fails."""
        if self.client is None or self.run_id is None:
            return False
        try:
            with quick_requests():
                getattr(self.client, method)(self.run_id, *args, **kwargs)
            return True
        except Exception as exc:  # noqa: BLE001
            self._offline(exc)
            self._save()
            return False

    def _save(self) -> None:
        write_json(self.folder / ENTRY, self.entry)

    def set_tags(self, tags: dict[str, Any]) -> None:
        self.entry["tags"].update({k: str(v) for k, v in tags.items()})
        self._save()
        for key, value in tags.items():
            self._call("set_tag", key, str(value))

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        self.entry["params"].update({k: str(v) for k, v in params.items()})
        self._save()
        self._call("log_batch", params=[Param(k, str(v)) for k, v in params.items()])

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        points = [{"key": k, "value": float(v), "step": step, "timestamp": stamp}
                  for k, v in metrics.items()]
        with open_journal(self.folder / METRICS) as handle:  # a resumed run's torn line cut
            handle.writelines(json.dumps(p) + "\n" for p in points)
        self._call("log_batch", metrics=[Metric(**p) for p in points])

    def log_metric(self, key: str, value: float, step: int = 0) -> None:
        self.log_metrics({key: value}, step)

    def log_table(self, data: dict[str, list], artifact_file: str) -> None:
        if not self._call("log_table", data, artifact_file):
            self.entry["tables"].append({"data": data, "artifact_file": artifact_file})
            self._save()

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """A file or a folder's contents, under ``artifact_path``; copied into the
        journal when MLflow does not take it (the original may be temporary)."""
        path = Path(path)
        method = "log_artifacts" if path.is_dir() else "log_artifact"
        if self._call(method, str(path), artifact_path):
            return
        keep = self.folder / "artifacts" / f"{len(self.entry['artifacts'])}"
        keep.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            shutil.copytree(path, keep / path.name)
        else:
            shutil.copy2(path, keep / path.name)
        self.entry["artifacts"].append({"path": str(keep / path.name),
                                        "artifact_path": artifact_path})
        self._save()

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            file = Path(tmp) / Path(artifact_file).name
            figure.savefig(file)
            self.log_artifact(file, str(Path(artifact_file).parent) if "/" in artifact_file
                              else None)

    def finish(self, status: str = "FINISHED") -> str | None:
        """End the run: the MLflow run id when everything reached MLflow, None when the
        entry stays in the outbox for :func:`publish_pending`."""
        self.entry["status"] = status
        if self._call("set_terminated", status):
            shutil.rmtree(self.folder, ignore_errors=True)
            return self.run_id
        self.entry["state"] = "pending"
        self._save()
        if unreachable(self.settings.tracking_uri):
            return None
        try:  # MLflow is back: send the journal now
            with quick_requests():
                return replay(client_for(self.settings), self.settings, self.entry)
        except Exception:  # noqa: BLE001 - it stays pending for `agentcycle publish`
            return None

    def suspend(self) -> None:
        """A run stopped to be resumed later: the journal stays open for it."""
        self._save()


@dataclass
class Published:
    entry_id: str
    origin: str
    run_id: str | None
    error: str | None = None


def pending(settings: Settings) -> list[dict]:
    """The outbox's entries, oldest first (state ``open``: a run still going or
    stopped to be resumed; ``pending``: finished, waiting for MLflow)."""
    return [entry for entry in _read_entries(settings) if isinstance(entry, dict)]


def _read_entries(settings: Settings) -> list[dict | Published]:
    """Each entry, or a Published error for one whose entry.json cannot be read (its
    folder stays: the run's data is in it)."""
    folder = outbox_dir(settings)
    entries: list[dict | Published] = []
    for file in sorted(folder.glob(f"*/{ENTRY}")) if folder.is_dir() else []:
        try:
            entries.append(_checked(json.loads(file.read_text(encoding="utf-8")),
                                    file.parent.name))
        except (OSError, ValueError) as exc:  # JSON and UTF-8 errors are ValueErrors
            entries.append(Published(file.parent.name, "", None,
                                     f"{file} is damaged ({first_line(exc)}); its run's files are "
                                     "kept in that folder, to repair or delete"))
    return entries


_FIELDS = {"id": str, "tags": dict, "params": dict, "tables": list, "artifacts": list}


def _checked(entry: Any, folder_name: str) -> dict:
    """The entry, if it has the fields a replay reads; its id must be its folder's name
    (the folder a publish deletes when done)."""
    if not isinstance(entry, dict):
        raise ValueError(f"a JSON {type(entry).__name__}, not an object")
    for key, kind in _FIELDS.items():
        if not isinstance(entry.get(key), kind):
            raise ValueError(f"'{key}' is missing or not a JSON {kind.__name__}")
    if entry["id"] != folder_name:
        raise ValueError(f"its id {entry['id']!r} is not its folder's name")
    return entry


def publish_pending(settings: Settings) -> list[Published]:
    """Replay every finished entry into the MLflow store ``settings`` names now; an entry
    that cannot be read is reported as not published, never skipped silently."""
    read = _read_entries(settings)
    damaged = [e for e in read if isinstance(e, Published)]
    entries = [e for e in read if isinstance(e, dict) and e.get("state") == "pending"]
    if not entries:
        return damaged
    error = unreachable(settings.tracking_uri)
    if error:
        from agentcycle.errors import ServiceError

        raise ServiceError(f"{error}: {len(entries)} run(s) stay in "
                           f"{outbox_dir(settings)}; publish again when it is back")
    client = client_for(settings)
    done = []
    for entry in entries:
        try:
            done.append(Published(entry["id"], entry.get("origin", ""),
                                  replay(client, settings, entry)))
        except Exception as exc:  # noqa: BLE001 - one bad entry must not stop the rest
            done.append(Published(entry["id"], entry.get("origin", ""), None,
                                  str(exc).splitlines()[0][:300] if str(exc) else repr(exc)))
    return done + damaged
