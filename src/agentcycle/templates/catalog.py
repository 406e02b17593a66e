"""The template catalog: a table for people, ``repositories.json`` for thinkube-control,
and each template exported as a git repository (with its version tags) to push to Gitea.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agentcycle._files import atomic_write
from agentcycle.errors import ConfigError
from agentcycle.settings import Settings
from agentcycle.templates._repo import TemplateRelease, git, materialize

DEPLOYMENT_TYPES = ("app", "component", "knative", "none")


@dataclass(frozen=True)
class TemplateInfo:
    name: str
    kind: str
    version: str
    title: str
    description: str
    deployment_type: str
    fixed_name: str | None
    tags: tuple[str, ...]


def _kind(name: str, manifest_extra: dict[str, Any]) -> str:
    """The agent kind: the manifest's ``metadata.kind`` if it has one, else the name's
    middle (``tkt-rag-agent`` -> ``rag``, ``tkt-agentic-workflow`` -> ``workflow``)."""
    if isinstance(manifest_extra.get("kind"), str):
        return manifest_extra["kind"]
    stem = name.removeprefix("tkt-").removesuffix("-agent")
    return stem.removeprefix("agentic-")


def _deployment(release: TemplateRelease) -> tuple[str, str | None]:
    text = git("show", f"{release.tag}:thinkube.yaml", cwd=release.repo)
    spec = (yaml.safe_load(text) or {}).get("spec") or {}
    deployment = spec.get("deployment") or {}
    kind = str(deployment.get("type", "app"))
    if kind not in DEPLOYMENT_TYPES:
        raise ConfigError(f"{release.name}/thinkube.yaml: spec.deployment.type '{kind}' "
                          f"is not one of {', '.join(DEPLOYMENT_TYPES)}")
    return kind, deployment.get("name") if kind == "component" else None


def info(release: TemplateRelease) -> TemplateInfo:
    meta = release.manifest.metadata
    deployment_type, fixed_name = _deployment(release)
    return TemplateInfo(release.name, _kind(release.name, meta.model_extra or {}),
                        release.version, meta.title or release.name, meta.description,
                        deployment_type, fixed_name, tuple(meta.tags))


def list_templates(settings: Settings | None = None) -> list[TemplateInfo]:
    """Every shipped template, published in its local repository, newest version."""
    from agentcycle.templates._sources import template_names

    return [info(materialize(name, settings)) for name in template_names()]


def catalog(org: str = "thinkube", base_url: str = "https://github.com",
            ssh_base: str | None = None, settings: Settings | None = None) -> dict[str, Any]:
    """``repositories.json`` in thinkube-metadata's format, listing the agent templates
    as ``application_template`` entries (``base_url`` may be the platform's Gitea)."""
    base_url = base_url.rstrip("/")
    host = base_url.split("://", 1)[-1]
    repositories = []
    for item in list_templates(settings):
        entry: dict[str, Any] = {
            "name": item.name,
            "org": org,
            "full_name": f"{org}/{item.name}",
            "description": item.description,
            "type": "application_template",
            "category": "templates",
            "deployment_type": item.deployment_type,
        }
        if item.fixed_name:
            entry["fixed_name"] = item.fixed_name
        entry |= {
            "version": item.version,
            "clone_for_development": True,
            "github_url": f"{base_url}/{org}/{item.name}",
            "ssh_url": (f"{ssh_base.rstrip('/')}/{org}/{item.name}.git" if ssh_base
                        else f"git@{host}:{org}/{item.name}.git"),
        }
        repositories.append(entry)
    return {
        "version": "1.0.0",
        "description": "agentcycle agent templates",
        "categories": {"templates": "Application templates"},
        "repositories": repositories,
    }


def write_catalog(out: Path, **options: Any) -> Path:
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"cannot write the catalog to {out}: it is a directory, not a file")
    data = catalog(**options)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out, json.dumps(data, indent=2) + "\n")
    except OSError as exc:
        raise ConfigError(f"cannot write the catalog to {out}: {exc.strerror or exc}") from None
    return out


def export_templates(dest: Path, names: list[str] | None = None,
                     settings: Settings | None = None) -> list[Path]:
    """Each template as a git repository ``dest/<name>`` (branch ``main``, every
    version tag), ready for ``git push --mirror`` to Gitea. An existing export is
    brought up to date (fetch), never overwritten."""
    from agentcycle.templates._sources import template_names

    known = template_names()
    for name in names or []:
        if name not in known:
            raise ConfigError(f"unknown template '{name}': choose one of {', '.join(known)}")
    dest = Path(dest).absolute()
    if dest.exists() and not dest.is_dir():
        raise ConfigError(f"cannot export templates into {dest}: it is a file, not a folder")
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names or known:
        release = materialize(name, settings)
        target = dest / name
        if (target / ".git").is_dir():
            git("fetch", "-q", "--tags", str(release.repo), "main", cwd=target)
            git("merge", "-q", "--ff-only", "FETCH_HEAD", cwd=target)
        elif target.exists():
            raise ConfigError(f"{target} exists and is not a git repository")
        else:
            git("clone", "-q", "--branch", "main", str(release.repo), str(target))
            git("remote", "remove", "origin", cwd=target)
        paths.append(target)
    return paths
