"""The outbox's files and their replay into MLflow: the journal a :class:`RunRecorder`
keeps under ``<data dir>/outbox/<id>/`` (``entry.json``, ``metrics.jsonl``, copied
artifacts), and :func:`replay`, which sends one entry to a run idempotently."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Any

from agentcycle._files import atomic_write
from agentcycle._jsonl import journal_records
from agentcycle.observe.tracing import setup_tracking
from agentcycle.settings import Settings

ENTRY = "entry.json"
METRICS = "metrics.jsonl"
ID_TAG = "agentcycle.outbox_id"


def outbox_dir(settings: Settings) -> Path:
    return settings.home.resolve() / "outbox"


def write_json(path: Path, data: dict) -> None:
    atomic_write(path, json.dumps(data, indent=1, default=str))


def client_for(settings: Settings) -> Any:
    from mlflow import MlflowClient


    setup_tracking(settings)  # the experiment, the credentials
    return MlflowClient(settings.tracking_uri)


def open_run(client: Any, settings: Settings, entry: dict) -> str:
    """The entry's MLflow run: the one it names (or tagged with its id), else a new one."""
    from mlflow.exceptions import MlflowException


    experiment_id = setup_tracking(settings)
    if entry.get("run_id"):
        with contextlib.suppress(MlflowException):  # another store: a new run
            run = client.get_run(entry["run_id"])
            if run.info.lifecycle_stage == "active":
                if run.info.status != "RUNNING":
                    client.update_run(run.info.run_id, status="RUNNING")
                return run.info.run_id
    found = client.search_runs([experiment_id], f"tags.`{ID_TAG}` = '{entry['id']}'",
                               max_results=1)
    if found:
        return found[0].info.run_id
    run = client.create_run(experiment_id, run_name=entry["run_name"],
                            tags={ID_TAG: entry["id"]})
    return run.info.run_id


def replay(client: Any, settings: Settings, entry: dict) -> str:
    from mlflow.entities import Metric, Param

    folder = outbox_dir(settings) / entry["id"]
    points = []  # read first: a damaged journal must not leave a new run RUNNING
    if (folder / METRICS).is_file():  # appended as the run went: a kill may tear the last
        points = [p for _, p in journal_records(
            folder / METRICS, "metrics", "repair or delete that line, then publish again")]
    run_id = open_run(client, settings, entry)
    entry["run_id"] = run_id
    write_json(folder / ENTRY, entry)  # a second publish continues this run
    run = client.get_run(run_id)
    for key, value in entry["tags"].items():
        client.set_tag(run_id, key, value)
    params = [Param(k, v) for k, v in entry["params"].items() if k not in run.data.params]
    for start in range(0, len(params), 100):
        client.log_batch(run_id, params=params[start:start + 100])
    seen: dict[str, set] = {}
    for key in {p["key"] for p in points}:
        seen[key] = {(m.step, m.timestamp) for m in client.get_metric_history(run_id, key)}
    new = [Metric(**p) for p in points if (p["step"], p["timestamp"]) not in seen[p["key"]]]
    for start in range(0, len(new), 1000):
        client.log_batch(run_id, metrics=new[start:start + 1000])
    for table in entry["tables"]:
        # log_table merges rows into a table already there: a replay writes it once.
        if not _has_artifact(client, run_id, table["artifact_file"]):
            client.log_table(run_id, table["data"], table["artifact_file"])
    for artifact in entry["artifacts"]:
        path = Path(artifact["path"])
        if path.is_dir():
            client.log_artifacts(run_id, str(path), artifact["artifact_path"])
        else:
            client.log_artifact(run_id, str(path), artifact["artifact_path"])
    client.set_terminated(run_id, entry.get("status", "FINISHED"))
    _write_back(entry, run_id)
    shutil.rmtree(folder, ignore_errors=True)
    return run_id


def _has_artifact(client: Any, run_id: str, artifact_file: str) -> bool:
    parent = str(Path(artifact_file).parent)
    listed = client.list_artifacts(run_id, None if parent == "." else parent)
    return any(f.path == artifact_file for f in listed)


def _write_back(entry: dict, run_id: str) -> None:
    """Record the MLflow run id where the run's own files keep it (an eval's run.json)."""
    if not entry.get("write_back"):
        return
    file, key = Path(entry["write_back"][0]), entry["write_back"][1]
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(file.read_text())
        data[key] = run_id
        write_json(file, data)
