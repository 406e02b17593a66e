"""Each template as a local git repository with one commit and one tag per version.

``copier update`` needs the template in git with tags, so the assembled template
(``_sources.assemble``) is committed to ``<data dir>/templates/<name>`` and tagged
``v<metadata.version>``. Materializing is idempotent (unchanged content adds nothing)
and safe for two processes (a file lock per template).

Content that changed without a version bump is still published, as a PEP 440
post-release of that version: ``v1.2.0.post1``, ``v1.2.0.post2``, ... Post-releases
sort after their version and before the next one, so ``copier update`` moves a
project to them, and the version in ``manifest.yaml`` stays what its author wrote.
"""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from packaging.version import InvalidVersion, Version

from agentcycle.errors import ConfigError, ServiceError
from agentcycle.settings import Settings
from agentcycle.templates._manifest import TemplateManifest, load_manifest, prepare_for_copier

_IDENTITY = {
    "GIT_AUTHOR_NAME": "agentcycle", "GIT_AUTHOR_EMAIL": "agentcycle@localhost",
    "GIT_COMMITTER_NAME": "agentcycle", "GIT_COMMITTER_EMAIL": "agentcycle@localhost",
}


@dataclass(frozen=True)
class TemplateRelease:
    """One published version of a template: where its repository is, and its tag."""

    name: str
    repo: Path
    tag: str
    commit: str
    manifest: TemplateManifest

    @property
    def version(self) -> str:
        return self.tag.removeprefix("v")


def git(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """Run git; its stdout. A failure becomes a ServiceError naming the command."""
    full_env = {**os.environ, **_IDENTITY, **(env or {})}
    full_env.pop("GIT_DIR", None)
    result = subprocess.run(["git", *args], cwd=cwd, env=full_env, capture_output=True,
                            text=True)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise ServiceError(f"git {args[0]} failed in {cwd}: {detail[-1] if detail else '?'}")
    return result.stdout.strip()


def templates_home(settings: Settings | None = None) -> Path:
    return ((settings or Settings()).home / "templates").resolve()


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _is_version(tag: str) -> bool:
    try:
        Version(tag)
    except InvalidVersion:
        return False
    return True


def _tags(repo: Path) -> list[str]:
    return [t for t in git("tag", "--list", cwd=repo).splitlines() if t]


def _next_tag(version: str, tags: list[str]) -> str:
    try:
        Version(version)
    except InvalidVersion:
        raise ConfigError(f"manifest.yaml: metadata.version '{version}' is not a PEP 440 "
                          "version (e.g. 1.0.0)") from None
    base = f"v{version}"
    if base not in tags:
        return base
    posts = [int(m.group(1)) for t in tags if (m := re.fullmatch(re.escape(base) +
                                                                  r"\.post(\d+)", t))]
    return f"{base}.post{max(posts, default=0) + 1}"


def _head(repo: Path) -> str | None:
    try:
        return git("rev-parse", "--verify", "-q", "HEAD", cwd=repo)
    except ServiceError:
        return None


def publish(name: str, assemble: Callable[[Path], None], repo: Path,
            message: str | None = None) -> TemplateRelease:
    """Commit and tag what ``assemble(dir)`` writes as template ``name`` in ``repo``,
    unless the newest commit already holds exactly that content."""
    repo = Path(repo).resolve()
    with _locked(repo.parent / f".{repo.name}.lock"):
        if not (repo / ".git").is_dir():
            repo.mkdir(parents=True, exist_ok=True)
            git("init", "-q", "-b", "main", cwd=repo)
        with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=repo.parent) as tmp:
            work = Path(tmp) / "template"
            assemble(work)
            manifest = load_manifest(work)
            prepare_for_copier(work, manifest)
            index = Path(tmp) / "index"
            env = {"GIT_INDEX_FILE": str(index), "GIT_WORK_TREE": str(work)}
            git(f"--git-dir={repo / '.git'}", "add", "-A", cwd=work, env=env)
            tree = git(f"--git-dir={repo / '.git'}", "write-tree", cwd=work, env=env)
        head = _head(repo)
        tags = _tags(repo)
        if head and git("rev-parse", "HEAD^{tree}", cwd=repo) == tree:
            at_head = [t for t in git("tag", "--points-at", "HEAD", cwd=repo).splitlines()
                       if _is_version(t)]
            if at_head:
                tag = max(at_head, key=Version)
                return TemplateRelease(name, repo, tag, head, manifest)
        tag = _next_tag(manifest.metadata.version, tags)
        parents = ["-p", head] if head else []
        commit = git("commit-tree", tree, *parents, "-m",
                     message or f"{name} {tag.removeprefix('v')}", cwd=repo)
        git("update-ref", "refs/heads/main", commit, cwd=repo)
        git("reset", "-q", "--hard", "main", cwd=repo)
        git("tag", "-a", tag, "-m", f"{name} {tag}", commit, cwd=repo)
        return TemplateRelease(name, repo, tag, commit, manifest)


def materialize(name: str, settings: Settings | None = None) -> TemplateRelease:
    """The shipped template ``name``, published (if new) in its local git repository."""
    from agentcycle.templates._sources import assemble

    return publish(name, lambda dest: assemble(name, dest),
                   templates_home(settings) / name)
