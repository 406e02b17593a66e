"""Every tuned model in MLflow's model registry, with its eval metrics and data lineage.

A version is the model directory logged as run artifacts plus version tags saying what
it was trained on and how it scored (``agentcycle.data.sha256``, ``agentcycle.base_model``,
``metric.accuracy`` ...). ``promote`` moves an alias (``champion``) only when every gate of
an eval run passed, and ``resolve_model_uri`` turns ``models:/legal@champion`` into a
local Hugging Face directory that serve, the router's local backend and the app load.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agentcycle._digest import file_sha256
from agentcycle.errors import AgentcycleError, ConfigError, DataError
from agentcycle.models.bundled import check_model_dir
from agentcycle.models.registry import (  # noqa: F401  (resolution lives low: models uses it)
    PREFIX,
    is_model_uri,
    parse_model_uri,
    resolve_model,
    resolve_model_uri,
)
from agentcycle.models.registry import (
    registry_client as _registry,
)
from agentcycle.settings import Settings

_TAG_LIMIT = 5000  # MLflow's limit on a model version tag's value


class PromotionRefused(AgentcycleError):
    """A gate failed (or none was given): the alias stays where it was."""


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    source: str
    run_id: str | None
    aliases: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    created: str = ""

    @property
    def uri(self) -> str:
        return f"{PREFIX}{self.name}/{self.version}"


def data_lineage(data_path: str | Path) -> dict[str, str]:
    """The training file's path and content hash, as version tags want them."""
    path = Path(data_path)
    if not path.is_file():
        raise DataError(f"training data {path}: no such file")
    return {"data.path": str(path.resolve()), "data.sha256": file_sha256(path)}


def _version_tags(metrics: dict[str, float] | None, lineage: dict[str, Any] | None) -> dict:
    tags = {f"agentcycle.{k}": _tag_value(v) for k, v in (lineage or {}).items()
            if v is not None}
    tags |= {f"metric.{k}": f"{float(v):.6g}" for k, v in (metrics or {}).items()}
    return tags


def _tag_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text[:_TAG_LIMIT]


def register_model(model_dir: str | Path, name: str, *, run_id: str | None = None,
                   metrics: dict[str, float] | None = None,
                   lineage: dict[str, Any] | None = None,
                   settings: Settings | None = None) -> ModelVersion:
    """Log ``model_dir`` as artifacts (of ``run_id``, else of a new run) and register it
    as the next version of ``name``, with ``metrics`` and ``lineage`` as version tags.

    The registry sees nothing until the artifacts are stored: a failure before leaves no
    version (and a registered model created for it is removed again).
    """
    settings = settings or Settings()
    folder = check_model_dir(model_dir)
    if not re.fullmatch(r"[\w.-]+", name):
        raise ConfigError(f"bad model name '{name}': letters, digits, '_', '-', '.' only")
    tags = _version_tags(metrics, lineage)
    with _registry(settings, f"registering {name}") as client:
        own_run = run_id is None
        run_id = run_id or _new_run(client, settings, name)
        try:
            path = _free_artifact_path(client, run_id)
            client.log_artifacts(run_id, str(folder), path)
        except BaseException:
            if own_run:  # a run holding half a model helps nobody
                client.delete_run(run_id)
            raise
        source = client.get_run(run_id).info.artifact_uri.rstrip("/") + "/" + path
        created = _ensure_registered(client, name)
        try:
            version = client.create_model_version(name, source, run_id=run_id, tags=tags,
                                                  description=f"from {folder}")
        except BaseException:
            if created:
                client.delete_registered_model(name)
            raise
        return _version(client, version)


def _free_artifact_path(client, run_id: str) -> str:
    """``model``, or ``model-2`` ... when the run already holds a registered model: a second
    registration must not overwrite the files an earlier version points at."""
    taken = {Path(f.path).name for f in client.list_artifacts(run_id)}
    return next(p for p in ("model", *(f"model-{i}" for i in range(2, 10_000)))
                if p not in taken)


def _new_run(client, settings: Settings, name: str) -> str:
    from agentcycle.observe.tracing import setup_tracking

    run = client.create_run(setup_tracking(settings), run_name=f"register-{name}",
                            tags={"agentcycle.phase": "register"})
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def _ensure_registered(client, name: str) -> bool:
    """True when this call created the registered model."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
        return False
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
    client.create_registered_model(name, tags={"agentcycle.kind": "chat-model"})
    return True


def _version(client, version) -> ModelVersion:
    import datetime as dt

    aliases = list(getattr(version, "aliases", None) or [])
    created = dt.datetime.fromtimestamp((version.creation_timestamp or 0) / 1000)
    return ModelVersion(name=version.name, version=str(version.version), source=version.source,
                        run_id=version.run_id, aliases=aliases, tags=dict(version.tags or {}),
                        created=created.strftime("%y-%m-%d %H:%M"))


def promote(name: str, version: str | int, gate_results: list, alias: str = "champion", *,
            eval_run: str | None = None, settings: Settings | None = None) -> ModelVersion:
    """Point ``alias`` at ``version`` when every gate passed; otherwise raise
    PromotionRefused naming the failed gates and leave the alias where it was."""
    settings = settings or Settings()
    if not gate_results:
        raise PromotionRefused(f"not promoting {name} v{version}: no gates to check (a suite "
                               "with 'gates:' or --gate)")
    failed = [r for r in gate_results if not r.passed]
    if failed:
        listed = ", ".join(f"{r.gate} (got {r.value:.4g})" for r in failed)
        raise PromotionRefused(f"not promoting {name} v{version} to @{alias}: gate failed: "
                               f"{listed}; @{alias} is unchanged")
    with _registry(settings, f"promoting {name} v{version}") as client:
        client.get_model_version(name, str(version))  # a missing version: ModelError
        summary = "; ".join(f"{r.gate} ({r.value:.4g})" for r in gate_results)
        client.set_model_version_tag(name, str(version), f"agentcycle.gates.{alias}",
                                     summary[:_TAG_LIMIT])
        if eval_run:
            client.set_model_version_tag(name, str(version), f"agentcycle.promoted_by.{alias}",
                                         eval_run)
        client.set_registered_model_alias(name, alias, str(version))
        return _version(client, client.get_model_version(name, str(version)))


def list_versions(name: str | None = None, settings: Settings | None = None
                  ) -> list[ModelVersion]:
    """Every version (of ``name``, or of every registered model), newest first."""
    settings = settings or Settings()
    with _registry(settings, "listing models") as client:
        names = [name] if name else [m.name for m in client.search_registered_models()]
        found = []
        for each in names:
            # Searched versions come without their aliases: the registered model has them.
            aliases = client.get_registered_model(each).aliases or {}
            escaped = each.replace("'", "\\'")
            for v in client.search_model_versions(f"name = '{escaped}'"):
                mine = [a for a, n in aliases.items() if str(n) == str(v.version)]
                found.append(replace(_version(client, v), aliases=mine))
    return sorted(found, key=lambda v: (v.name, -int(v.version)))


# -- lineage and gates from the runs that made and judged a model ---------------------

def finetune_run_for(model_dir: str | Path, settings: Settings | None = None) -> str | None:
    """The fine-tune run that wrote ``model_dir`` (train.py tags it), if the store has it."""
    settings = settings or Settings()
    folder = str(Path(model_dir).expanduser().resolve()).replace("'", "\\'")
    with _registry(settings, "finding the fine-tune run") as client:
        from agentcycle.observe.tracing import setup_tracking

        runs = client.search_runs([setup_tracking(settings)], max_results=1,
                                  filter_string=f"tags.`agentcycle.model_dir` = '{folder}'",
                                  order_by=["attributes.start_time DESC"])
    return runs[0].info.run_id if runs else None


def finetune_lineage(run_id: str, settings: Settings | None = None) -> dict[str, Any]:
    """Base model, method and params of a fine-tune run, and the hash of the training data
    it logged (``data/train.jsonl``); a ``data_path`` param is kept as the data's path."""
    settings = settings or Settings()
    with _registry(settings, f"reading fine-tune run {run_id}") as client:
        params = dict(client.get_run(run_id).data.params)
        lineage: dict[str, Any] = {"finetune_run": run_id,
                                   "base_model": params.pop("base_model", None),
                                   "method": params.pop("method", "lora"), "params": params}
        if "data_path" in params:
            lineage["data.path"] = params["data_path"]
        if any(f.path == "data/train.jsonl" for f in client.list_artifacts(run_id, "data")):
            import mlflow.artifacts

            with tempfile.TemporaryDirectory() as tmp:
                local = mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path="data/train.jsonl", dst_path=tmp,
                    tracking_uri=settings.tracking_uri)
                lineage["data.sha256"] = params.get("data_sha256") or file_sha256(local)
            lineage["data.artifact"] = f"runs:/{run_id}/data/train.jsonl"
    return lineage
