"""``agentcycle new`` and ``agentcycle templates update``: Copier underneath.

A project is rendered from a tagged template repository (``copier.run_copy`` with
``vcs_ref``), so its answers file records the template's location and version, and
then committed to a fresh git repository, so ``copier update`` can later apply a newer
template version as a three-way merge that keeps the project's own edits.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentcycle._yaml import load_yaml_file
from agentcycle.errors import ConfigError, DataError
from agentcycle.settings import Settings
from agentcycle.templates._manifest import ANSWERS_FILE, check_project_name
from agentcycle.templates._repo import TemplateRelease, git, materialize, publish


@dataclass(frozen=True)
class NewProject:
    path: Path
    template: str
    version: str
    answers: dict[str, Any]
    secrets: list[str]


def _git_identity() -> tuple[str, str]:
    def config(key: str) -> str:
        result = subprocess.run(["git", "config", "--get", key], capture_output=True,
                                text=True)
        return result.stdout.strip()

    return config("user.name") or "agentcycle user", config("user.email") or "user@example.com"


def _copier_error(exc: Exception) -> ConfigError:
    text = str(exc).strip().splitlines()
    return ConfigError(f"copier: {text[-1] if text else type(exc).__name__}")


def render(release: TemplateRelease, dest: Path, data: dict[str, Any], *,
           defaults: bool = True) -> None:
    """Copier-copy ``release`` into ``dest`` (which must not exist)."""
    import copier
    from copier.errors import CopierError
    from jinja2 import TemplateError

    try:
        copier.run_copy(str(release.repo), dest, data=data, vcs_ref=release.tag,
                        defaults=defaults, overwrite=True, quiet=True, unsafe=False)
    except TemplateError as exc:
        where = getattr(exc, "name", None) or getattr(exc, "filename", None) or "?"
        raise ConfigError(f"copier: template {release.name} {release.tag}: {where}: "
                          f"{exc.message or exc}") from None
    except (CopierError, ValueError) as exc:
        raise _copier_error(exc) from None


def new_project(template: str, dest: Path, data: dict[str, str] | None = None, *,
                defaults: bool = True, settings: Settings | None = None) -> NewProject:
    """Render ``template`` into the new folder ``dest`` and commit it as the first commit.

    ``data`` holds the template's parameters and may override the reserved
    ``project_description``, ``author_name`` and ``author_email``; ``project_name`` is
    ``dest``'s name. Any failure leaves nothing at ``dest``."""
    from agentcycle.templates._sources import template_names

    data = dict(data or {})
    names = template_names()
    if template not in names:
        raise ConfigError(f"unknown template '{template}': choose one of {', '.join(names)}")
    dest = Path(dest).absolute()
    if dest.exists() or dest.is_symlink():
        raise ConfigError(f"{dest} already exists: choose a new folder for the project")
    if not dest.parent.is_dir():
        raise ConfigError(f"{dest.parent} does not exist: create it first")
    name = check_project_name(dest.name)
    if data.get("project_name", name) != name:
        raise ConfigError(f"project_name comes from the folder's name ({name}); "
                          "leave --data project_name out")
    release = materialize(template, settings)
    manifest = release.manifest
    answers = manifest.answers(data, use_defaults=defaults)
    author, email = _git_identity()
    answers |= {
        "project_name": name,
        "project_description": data.get("project_description",
                                        manifest.metadata.description),
        "author_name": data.get("author_name", author),
        "author_email": data.get("author_email", email),
    }
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=dest.parent) as tmp:
        work = Path(tmp) / name
        render(release, work, answers, defaults=defaults)
        if not defaults:  # what was typed at Copier's prompts meets the manifest's checks
            typed = read_answers(work)
            manifest.answers({p.name: typed[p.name] for p in manifest.parameters
                              if p.name in typed}, use_defaults=True)
        git("init", "-q", "-b", "main", cwd=work)
        git("add", "-A", cwd=work)
        identity = {"GIT_AUTHOR_NAME": answers["author_name"],
                    "GIT_AUTHOR_EMAIL": answers["author_email"]}
        git("commit", "-q", "--no-verify", "-m",
            f"{name}: from {template} {release.version}", cwd=work, env=identity)
        try:  # a rename never replaces a non-empty folder that appeared meanwhile
            if dest.exists():
                raise OSError
            work.rename(dest)
        except OSError:
            raise ConfigError(f"{dest} appeared while rendering: nothing written") from None
    recorded = {k: v for k, v in read_answers(dest).items() if not k.startswith("_")}
    return NewProject(dest, template, release.version, recorded,
                      [s.name for s in manifest.secrets])


def read_answers(project: Path) -> dict[str, Any]:
    path = Path(project) / ANSWERS_FILE
    if not path.is_file():
        raise DataError(f"{path} not found: {project} was not made by `agentcycle new`")
    answers = load_yaml_file(path, error=DataError).data or {}
    if not isinstance(answers, dict) or "_src_path" not in answers:
        raise DataError(f"{path}: no _src_path (not a Copier answers file)")
    return answers


@dataclass(frozen=True)
class UpdateResult:
    path: Path
    template: str
    old_version: str
    new_version: str
    changed: list[str]
    conflicts: list[str]


def _refresh_source(answers: dict[str, Any]) -> str | None:
    """Publish the installed version of a shipped template into the repository the
    project was rendered from (wherever that data dir was), so update sees it."""
    from agentcycle.templates._sources import assemble, template_names

    src = Path(str(answers["_src_path"]))
    if src.name not in template_names():
        return None
    if not (src / ".git").is_dir():
        raise DataError(f"the template repository {src} is gone (was the data dir "
                        "cleared?): the project's template version cannot be replayed")
    publish(src.name, lambda dest: assemble(src.name, dest), src)
    return src.name


def update_project(project: Path) -> UpdateResult:
    """Apply the newest version of the project's template (``copier update``).

    The project's edits survive (a three-way merge; clashing lines get conflict
    markers, listed in the result). A project with uncommitted changes is refused."""
    import copier
    from copier.errors import CopierError

    project = Path(project).absolute()
    if not (project / ".git").exists():
        raise DataError(f"{project} is not a git repository: `copier update` needs the "
                        "project committed in git")
    answers = read_answers(project)
    dirty = git("status", "--porcelain", cwd=project)
    if dirty:
        first = dirty.splitlines()[0][3:]
        raise DataError(f"{project} has uncommitted changes ({first} ...): commit or "
                        "stash them before updating")
    template = _refresh_source(answers)
    old = str(answers.get("_commit", "?")).removeprefix("v")
    try:
        copier.run_update(project, defaults=True, overwrite=True, skip_answered=True,
                          quiet=True, unsafe=False, conflict="inline")
    except (CopierError, ValueError) as exc:
        raise _copier_error(exc) from None
    new = str(read_answers(project).get("_commit", "?")).removeprefix("v")
    status = git("status", "--porcelain", cwd=project).splitlines()
    changed = sorted(line[3:] for line in status)
    conflicts = sorted(p for p in changed if (project / p).is_file() and
                       "<<<<<<< " in (project / p).read_text(errors="replace"))
    return UpdateResult(project, template or str(answers["_src_path"]), old, new,
                        changed, conflicts)
