"""Every tuned model in MLflow's model registry, with its eval metrics and data lineage.

A version is the model directory logged as run artifacts plus version tags saying what
it was trained on and how it scored (``agentcycle.data.sha256``, ``agentcycle.base_model``,
``metric.accuracy`` ...). ``promote`` moves an alias (``champion``) only when every gate of
an eval run passed, and ``resolve_model_uri`` turns ``models:/legal@champion`` into a
local Hugging Face directory that serve, the router's local backend and the app load.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agentcycle.errors import AgentcycleError, ConfigError, DataError, ModelError, ServiceError
from agentcycle.settings import Settings

PREFIX = "models:/"
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[\w.-]+)|/(?P<version>\d+))$")
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


def is_model_uri(text: Any) -> bool:
    return isinstance(text, str) and text.startswith(PREFIX)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def data_lineage(data_path: str | Path) -> dict[str, str]:
    """The training file's path and content hash, as version tags want them."""
    path = Path(data_path)
    if not path.is_file():
        raise DataError(f"training data {path}: no such file")
    return {"data.path": str(path.resolve()), "data.sha256": file_sha256(path)}


@contextmanager
def _registry(settings: Settings, doing: str) -> Iterator[Any]:
    """An MlflowClient on the configured store; any failure talking to it is one
    ServiceError naming the store and what we were doing."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from agentcycle.observe.tracing import setup_tracking

    setup_tracking(settings)  # a store that is down fails here, before anything is written
    try:
        yield MlflowClient(tracking_uri=settings.tracking_uri,
                           registry_uri=settings.tracking_uri)
    except MlflowException as exc:
        # A name, version or alias that does not exist is the caller's, not the store's.
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise ModelError(f"{doing}: {_first_line(exc)}") from None
        raise ServiceError(f"MLflow model registry at {settings.tracking_uri}: {doing} "
                           f"failed: {_first_line(exc)}") from None
    except OSError as exc:
        raise ServiceError(f"MLflow model registry at {settings.tracking_uri}: {doing} "
                           f"failed: {exc}") from None


def _first_line(exc: Exception) -> str:
    return (str(getattr(exc, "message", "") or exc).splitlines() or [""])[0][:300]


def _version_tags(metrics: dict[str, float] | None, lineage: dict[str, Any] | None) -> dict:
    tags = {f"agentcycle.{k}": _tag_value(v) for k, v in (lineage or {}).items()
            if v is not None}
    tags |= {f"metric.{k}": f"{float(v):.6g}" for k, v in (metrics or {}).items()}
    return tags


def _tag_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text[:_TAG_LIMIT]


def check_model_dir(model_dir: str | Path) -> Path:
    folder = Path(model_dir).expanduser()
    if not (folder / "config.json").is_file():
        raise DataError(f"{folder}: not a Hugging Face model directory (no config.json)")
    return folder.resolve()


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


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/NAME@ALIAS`` -> (name, alias, None); ``models:/NAME/3`` -> (name, None, "3")."""
    match = _URI.match(uri.strip())
    if not match:
        raise ConfigError(f"bad model URI '{uri}': write models:/NAME@ALIAS or "
                          "models:/NAME/VERSION")
    return match["name"], match["alias"], match["version"]


def resolve_model_uri(uri: str, settings: Settings | None = None) -> Path:
    """The local HF directory of a registered version, downloaded once into the models
    cache (``<models>/registry/<store>/NAME/VERSION``); an alias is looked up every time.

    ``<store>`` is a hash of the tracking URI: version 3 of 'legal' on the laptop's
    store and on the platform's server are different models."""
    from filelock import FileLock

    settings = settings or Settings()
    name, alias, version = parse_model_uri(uri)
    store = hashlib.sha256(settings.tracking_uri.encode()).hexdigest()[:12]
    cache = settings.models_dir / "registry" / store / name
    if version and (cache / version / "config.json").is_file():
        return cache / version  # a version never changes: no registry call needed
    with _registry(settings, f"resolving {uri}") as client:
        if alias:
            aliases = client.get_registered_model(name).aliases or {}
            if alias not in aliases:
                raise ModelError(f"{uri}: no version of {name} is @{alias} yet (agentcycle "
                                 f"registry promote {name} VERSION --eval-run ID)")
            version = str(aliases[alias])
        else:
            client.get_model_version(name, str(version))
        target = cache / str(version)
        cache.mkdir(parents=True, exist_ok=True)
        with FileLock(str(target) + ".lock"):
            if not (target / "config.json").is_file():  # another process may have won
                _download(f"{PREFIX}{name}/{version}", target, settings)
    return target


def _download(uri: str, target: Path, settings: Settings) -> None:
    """Into a temporary folder beside ``target``, renamed into place when complete: a
    broken download never looks like a model."""
    import mlflow.artifacts

    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        local = Path(mlflow.artifacts.download_artifacts(
            artifact_uri=uri, dst_path=str(tmp), tracking_uri=settings.tracking_uri,
            registry_uri=settings.tracking_uri))
        if not (local / "config.json").is_file():
            raise ModelError(f"{uri} holds no Hugging Face model (no config.json in its "
                             "artifacts)")
        if target.exists():
            shutil.rmtree(target)
        local.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def resolve_model(model: str | Path, settings: Settings | None = None) -> Path:
    """A model argument as given anywhere (a directory or ``models:/...``) -> a directory."""
    if is_model_uri(str(model)):
        return resolve_model_uri(str(model), settings)
    return Path(model).expanduser()


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


def eval_evidence(eval_run: str, gates: list[str] | None = None,
                  settings: Settings | None = None) -> tuple[dict[str, float], dict, list]:
    """An eval run's metrics, its lineage entries, and its gates checked again: the
    suite's own (read from the suite file it ran) plus ``gates``."""
    from agentcycle.evals.gates import check_gates, parse_gate
    from agentcycle.evals.results import load_run
    from agentcycle.evals.session import gate_metrics
    from agentcycle.evals.suite import load_suite

    settings = settings or Settings()
    run = load_run(eval_run, settings)
    if not run.finished:
        raise DataError(f"eval run {run.run_id} did not finish: finish it (--resume) first")
    specs = list(gates or [])
    if run.suite_path and Path(run.suite_path).is_file():
        specs = [*load_suite(Path(run.suite_path)).gates, *specs]
    results = check_gates(gate_metrics(run.metrics, run.tags), [parse_gate(g) for g in specs])
    lineage = {"eval_run": run.run_id, "eval_suite": run.suite,
               "eval_mlflow_run": run.mlflow_run_id}
    return dict(run.metrics), lineage, results
