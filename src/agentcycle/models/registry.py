"""Models in MLflow's registry, by URI: ``models:/NAME@ALIAS`` or ``models:/NAME/3`` ->
a local Hugging Face directory, downloaded once. This low layer is what serving, the
bundled-model lookup and the agents' backends use; registering and promoting live in
:mod:`agentcycle.finetune.registry`."""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agentcycle.errors import ConfigError, ModelError, ServiceError
from agentcycle.settings import Settings

PREFIX = "models:/"
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[\w.-]+)|/(?P<version>\d+))$")


def is_model_uri(text: Any) -> bool:
    return isinstance(text, str) and text.startswith(PREFIX)


@contextmanager
def registry_client(settings: Settings, doing: str) -> Iterator[Any]:
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
            raise ModelError(f"{doing}: {first_line(exc)}") from None
        raise ServiceError(f"MLflow model registry at {settings.tracking_uri}: {doing} "
                           f"failed: {first_line(exc)}") from None
    except OSError as exc:
        raise ServiceError(f"MLflow model registry at {settings.tracking_uri}: {doing} "
                           f"failed: {exc}") from None


def first_line(exc: Exception) -> str:
    return (str(getattr(exc, "message", "") or exc).splitlines() or [""])[0][:300]




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
    with registry_client(settings, f"resolving {uri}") as client:
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
