"""Offline validation of generated ``k8s/`` files, before anything is pushed.

Four checks, each error naming the file, the object and the field:

1. core kinds against the upstream Kubernetes schemas (``kubernetes-validate``,
   strict: an unknown field is an error), the containers inside custom resources too;
2. our custom resources against our models (``agentcycle.deploy.resources``);
3. ``kubectl kustomize`` over a temporary copy (the build ArgoCD runs);
4. the secret scan: manifests reference Secrets, never carry a value: no Secret with
   ``data``/``stringData``, no credential-named variable with a literal value, no
   string that looks like a key, a token or a URL with a password.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from agentcycle.deploy._secrets import CREDENTIAL_NAME, secret_like
from agentcycle.deploy.resources import embedded_containers, parse_custom
from agentcycle.errors import ConfigError, MissingDependency

__all__ = ["K8S_VERSION", "ManifestError", "kustomize_build", "referenced_secrets",
           "scan_secrets", "validate_manifests"]

K8S_VERSION = "1.33"  # the Kubernetes release whose schemas the core kinds must meet
class ManifestError(ConfigError):
    """A generated manifest is invalid, or would put a secret into git."""


def validate_manifests(files: dict[str, str], *, kustomize: bool = True) -> None:
    """Raise ManifestError on the first problem in ``files`` (name under k8s/ -> YAML)."""
    for name, text in sorted(files.items()):
        for index, obj in enumerate(_documents(name, text)):
            where = f"k8s/{name}: {_describe(obj, index)}"
            scan_secrets(obj, where)
            if name == "kustomization.yaml":
                continue
            _validate_object(obj, where)
    if kustomize:
        kustomize_build(files)


def _documents(name: str, text: str) -> Iterator[dict[str, Any]]:
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ManifestError(f"k8s/{name}{line}: invalid YAML: "
                            f"{getattr(exc, 'problem', None) or exc}") from None
    for index, doc in enumerate(docs):
        if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
            raise ManifestError(f"k8s/{name}: document {index + 1} is not a Kubernetes "
                                "object (apiVersion and kind)")
        yield doc


def _describe(obj: dict[str, Any], index: int) -> str:
    name = (obj.get("metadata") or {}).get("name")
    return f"{obj['kind']}/{name}" if name else f"{obj['kind']} (document {index + 1})"


def _validate_object(obj: dict[str, Any], where: str) -> None:
    try:
        resource = parse_custom(obj)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise ManifestError(f"{where}: {field}: "
                            f"{first['msg'].removeprefix('Value error, ')}") from None
    if resource is None:
        _core(obj, where, "")
        return
    for path, container in embedded_containers(resource):
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"},
               "spec": {"containers": [{"name": "main", **container}]}}  # Argo names it
        _core(pod, where, path, prefix=("spec", "containers", 0))


def _core(obj: dict[str, Any], where: str, path: str,
          prefix: tuple[Any, ...] = ()) -> None:
    kv = _kubernetes_validate()
    try:
        kv.validate(obj, K8S_VERSION, strict=True)
    except kv.ValidationError as exc:
        parts = list(exc.path)[len(prefix):]
        field = ".".join(str(p) for p in parts)
        field = ".".join(p for p in (path, field) if p)
        raise ManifestError(f"{where}: {field or '(object)'}: {exc.message}") from None
    except kv.SchemaNotFoundError:
        raise ManifestError(f"{where}: {obj['apiVersion']} {obj['kind']} is not a kind "
                            f"Kubernetes {K8S_VERSION} knows") from None


def _kubernetes_validate() -> Any:
    try:
        import kubernetes_validate.utils as kv
    except ImportError:
        raise MissingDependency("kubernetes-validate", "validating Kubernetes manifests") \
            from None
    return kv


def scan_secrets(obj: Any, where: str) -> None:
    """Fail if ``obj`` carries a secret value rather than a reference to one."""
    if isinstance(obj, dict) and obj.get("kind") == "Secret" and (
            obj.get("data") or obj.get("stringData")):
        raise ManifestError(f"{where}: a Secret with values would be committed to git: "
                            "create it in the cluster and reference it (secretKeyRef)")
    for path, value in _walk(obj, ()):
        if isinstance(value, dict) and "name" in value and isinstance(value.get("value"), str):
            name, text = str(value["name"]), value["value"]
            if path[-2:-1] == ("env",) and text and CREDENTIAL_NAME.search(name):
                raise ManifestError(
                    f"{where}: {_dotted(path)} ({name}): a credential as a plain value: "
                    "reference a Secret (valueFrom.secretKeyRef) instead")
        what = secret_like(value) if isinstance(value, str) else None
        if what:
            raise ManifestError(f"{where}: {_dotted(path)}: looks like {what}: "
                                "secrets belong in a Secret, referenced")


def referenced_secrets(files: dict[str, str]) -> dict[tuple[str, str], list[str]]:
    """(namespace, Secret name) -> the keys the manifests read from it ([] when read
    whole): what must exist in the cluster, since git holds none of it."""
    found: dict[tuple[str, str], set[str]] = {}
    for name, text in sorted(files.items()):
        if name == "kustomization.yaml":
            continue
        for obj in _documents(name, text):
            namespace = (obj.get("metadata") or {}).get("namespace", "")
            for path, value in _walk(obj, ()):
                if not isinstance(value, dict):
                    continue
                key = path[-1] if path else None
                if key in ("secretKeyRef", "usernameSecret", "passwordSecret"):
                    found.setdefault((namespace, value["name"]), set()).add(value["key"])
                elif key == "secretRef" or (path[-2:-1] == ("imagePullSecrets",)):
                    found.setdefault((namespace, value["name"]), set())
                elif key == "secret" and "secretName" in value:
                    found.setdefault((namespace, value["secretName"]), set())
    return {ref: sorted(keys) for ref, keys in sorted(found.items())}


def _walk(value: Any, path: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], Any]]:
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk(item, (*path, index))


def _dotted(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out.lstrip(".")


def kustomize_build(files: dict[str, str], timeout_s: float = 60) -> str:
    """``kubectl kustomize`` over a temporary copy of ``files``; returns its output."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise ManifestError("kubectl is not installed: it builds the kustomization as "
                            "ArgoCD will (Debian/Ubuntu: apt-get install kubectl)")
    with tempfile.TemporaryDirectory(prefix="agentcycle-k8s-") as tmp:
        for name, text in files.items():
            path = Path(tmp) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        try:
            done = subprocess.run([kubectl, "kustomize", tmp], capture_output=True,
                                  text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise ManifestError(f"k8s/kustomization.yaml: kubectl kustomize took over "
                                f"{timeout_s:.0f} s") from None
    if done.returncode != 0:
        lines = [ln.strip() for ln in (done.stderr or done.stdout).splitlines() if ln.strip()]
        detail = (lines[-1] if lines else f"exit code {done.returncode}").replace(tmp, "k8s")
        raise ManifestError(f"k8s/kustomization.yaml: kubectl kustomize failed: {detail}")
    return done.stdout
