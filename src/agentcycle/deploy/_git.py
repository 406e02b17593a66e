"""Commit a project and push it over HTTPS with a token that never touches a file.

The token travels to git in the environment only (`GIT_CONFIG_COUNT` /
`GIT_CONFIG_KEY_n`: an `Authorization` header for this one process), never in
`.git/config`, a remote URL, argv or a message: git's output is scrubbed before it is
shown. Lock races (ours: `index.lock`; the server's: `cannot lock ref`) are retried.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agentcycle.deploy._http import plain
from agentcycle.errors import ConfigError, DataError, ServiceError

_LOCK_RACE = re.compile(r"index\.lock|cannot lock ref|unable to lock|failed to lock|"
                        r"Unable to create '.*\.lock'|could not lock", re.IGNORECASE)
_BEHIND = re.compile(r"non-fast-forward|fetch first|rejected.*\(stale info\)")
#: Never committed, whatever the project's .gitignore says.
NEVER_COMMITTED = (".env", ".env.local", "*.pem", "*.key")
_IDENTITY = {"GIT_AUTHOR_NAME": "agentcycle", "GIT_AUTHOR_EMAIL": "agentcycle@localhost",
             "GIT_COMMITTER_NAME": "agentcycle", "GIT_COMMITTER_EMAIL": "agentcycle@localhost"}


class GitError(ServiceError):
    """A git command failed; `output` holds all it said (scrubbed of the token)."""

    def __init__(self, message: str, output: str):
        super().__init__(message)
        self.output = output


@dataclass(frozen=True)
class Credentials:
    username: str
    token: str

    def env(self) -> dict[str, str]:
        """git config for one process: the Basic auth header Gitea accepts for a token."""
        basic = base64.b64encode(f"{self.username}:{self.token}".encode()).decode()
        return {"GIT_CONFIG_COUNT": "2",
                "GIT_CONFIG_KEY_0": "http.extraHeader",
                "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
                "GIT_CONFIG_KEY_1": "credential.helper", "GIT_CONFIG_VALUE_1": ""}

    def scrub(self, text: str) -> str:
        basic = base64.b64encode(f"{self.username}:{self.token}".encode()).decode()
        return text.replace(basic, "***").replace(self.token, "***") if self.token else text


@dataclass(frozen=True)
class PushResult:
    commit: str
    changed: bool  # False: the remote branch already held this commit


def _base_env(credentials: Credentials | None) -> dict[str, str]:
    # The caller's own GIT_CONFIG_COUNT/KEY_n/VALUE_n would clash with ours.
    env = {k: v for k, v in os.environ.items()
           if not re.fullmatch(r"GIT_CONFIG_(COUNT|KEY_\d+|VALUE_\d+|PARAMETERS)", k)}
    env |= {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "", "SSH_ASKPASS": "", "LC_ALL": "C"}
    return env | (credentials.env() if credentials else {})


def git(project_dir: Path, *args: str, credentials: Credentials | None = None,
        retries: int = 4, check: bool = True, what: str = "git",
        env: dict[str, str] | None = None, timeout_s: float = 300) -> subprocess.CompletedProcess:
    """Run git in `project_dir`; a lock race is retried, any other failure is one line."""
    if shutil.which("git") is None:
        raise ConfigError("git is not installed: the deploy commits and pushes with git")
    env = _base_env(credentials) | (env or {})
    for attempt in range(retries + 1):
        try:
            done = subprocess.run(["git", *args], cwd=project_dir, env=env, text=True,
                                  capture_output=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise GitError(f"{what}: git {args[0]} did not finish in {timeout_s:.0f} s",
                           "") from None
        if done.returncode == 0 or not check:
            return done
        output = (done.stderr or done.stdout).strip()
        if attempt < retries and _LOCK_RACE.search(output):
            time.sleep(0.2 * 2 ** attempt)
            continue
        scrub = credentials.scrub if credentials else str
        output = scrub(output)
        raise GitError(f"{what}: git {args[0]} failed: {_detail(output, done.returncode)}",
                       output)
    raise AssertionError("unreachable")


def _detail(output: str, returncode: int) -> str:
    """What git said that matters: the server's own words (`remote:`), the refused ref
    (`! [remote rejected] ... (why)`), the fatal line; not hints or the URL."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    key = [line for line in lines if line.startswith(("remote:", "!", "fatal:", "error:"))
           and "failed to push some refs" not in line]
    chosen = (key or [line for line in lines if not line.startswith("hint:")])[-4:]
    return "; ".join(plain(line) for line in chosen) or f"exit {returncode}"


def _identity_env(project_dir: Path) -> dict[str, str]:
    """A commit needs an identity; CI and fresh machines have none configured."""
    for key in ("user.name", "user.email"):
        if not git(project_dir, "config", key, check=False).stdout.strip():
            return {k: os.environ.get(k, v) for k, v in _IDENTITY.items()}
    return {}


def commit_project(project_dir: Path, message: str, *, secrets: Iterable[str] = (),
                   exclude: Sequence[str] = ()) -> str | None:
    """Stage the project (minus NEVER_COMMITTED and `exclude`), refuse if a secret value
    would be committed, commit if anything changed; returns HEAD's sha (None: no commit
    yet, nothing to commit)."""
    if not (project_dir / ".git").exists():
        git(project_dir, "init", "-q", "-b", "main")
    skipped = [f":(exclude,glob)**/{pattern}" for pattern in NEVER_COMMITTED]
    skipped += [f":(exclude){path}" for path in exclude]
    git(project_dir, "add", "-A", "--", ".", *skipped)
    for pattern in NEVER_COMMITTED:  # tracked before: leave the file, drop it from git
        git(project_dir, "rm", "-q", "--cached", "--ignore-unmatch", "--",
            f":(glob)**/{pattern}")
    _refuse_secrets(project_dir, [s for s in secrets if s and len(s) >= 6])
    _refuse_secret_history(project_dir)
    if git(project_dir, "diff", "--cached", "--quiet", check=False).returncode != 0:
        git(project_dir, "commit", "-q", "-m", message, env=_identity_env(project_dir))
    return head(project_dir)


def head(project_dir: Path) -> str | None:
    done = git(project_dir, "rev-parse", "-q", "--verify", "HEAD", check=False)
    return done.stdout.strip() or None


def source_commit(project_dir: Path, generated: str = "k8s") -> str | None:
    """The last commit that changed the project outside `generated` (12 hex digits):
    the image tag, stable across deploys that only regenerate `k8s/`."""
    if not (project_dir / ".git").exists():
        return None
    done = git(project_dir, "log", "-1", "--format=%H", "--", ".", f":(exclude){generated}",
               check=False)
    return done.stdout.strip()[:12] or None


def _refuse_secret_history(project_dir: Path) -> None:
    """A `.env` committed once is in every push of the branch, even if deleted since."""
    if head(project_dir) is None:
        return
    patterns = [f":(glob)**/{pattern}" for pattern in NEVER_COMMITTED]
    added = git(project_dir, "log", "--diff-filter=A", "--format=%h", "--name-only", "-1",
                "HEAD", "--", *patterns).stdout.split()
    if added:
        git(project_dir, "reset", "-q", check=False)  # the index as the user left it
        raise DataError(f"{added[1]} is in the project's git history (commit {added[0]}): a "
                        "push would publish it; remove it from the history (git filter-repo "
                        "--path ... --invert-paths) and rotate its secrets, then rerun")


def _refuse_secrets(project_dir: Path, secrets: Sequence[str]) -> None:
    if not secrets:
        return
    listed = git(project_dir, "ls-files", "-z", "--cached").stdout.split("\0")
    for name in filter(None, listed):
        path = project_dir / name
        if not path.is_file() or path.stat().st_size > 5_000_000:
            continue
        data = path.read_bytes()
        if any(secret.encode() in data for secret in secrets):
            git(project_dir, "reset", "-q", check=False)
            raise DataError(f"{name} holds a secret value (a token or the webhook secret): "
                            "nothing was pushed; move it to a Secret or .env")


def ensure_remote(project_dir: Path, url: str, name: str = "origin") -> str:
    """The remote to push to, by URL (no credentials in it); `origin` unless the project's
    origin already points elsewhere, then `thinkube`."""
    current = git(project_dir, "remote", "get-url", name, check=False)
    if current.returncode != 0:
        git(project_dir, "remote", "add", name, url)
        return name
    if current.stdout.strip() == url:
        return name
    if name == "origin":
        return ensure_remote(project_dir, url, "thinkube")
    git(project_dir, "remote", "set-url", name, url)
    return name


def remote_head(project_dir: Path, remote: str, branch: str,
                credentials: Credentials) -> str | None:
    done = git(project_dir, "ls-remote", remote, f"refs/heads/{branch}",
               credentials=credentials, what="Gitea (git over HTTPS)")
    line = done.stdout.strip()
    return line.split()[0] if line else None


def push(project_dir: Path, url: str, credentials: Credentials, *,
         branch: str = "main") -> PushResult:
    """`git push -u <remote> HEAD:<branch>`; behind the remote (the image updater commits
    there), rebase on it once and push again."""
    what = "Gitea (git over HTTPS)"
    remote = ensure_remote(project_dir, url)
    local = git(project_dir, "rev-parse", "HEAD").stdout.strip()
    if remote_head(project_dir, remote, branch, credentials) == local:
        return PushResult(local, changed=False)
    args = ("push", "-u", remote, f"HEAD:refs/heads/{branch}")
    try:
        git(project_dir, *args, credentials=credentials, what=what)
    except GitError as exc:
        if not _BEHIND.search(exc.output):
            raise
        git(project_dir, "fetch", "-q", remote, branch, credentials=credentials, what=what)
        rebase = git(project_dir, "rebase", "-q", "FETCH_HEAD", check=False,
                     env=_identity_env(project_dir))
        if rebase.returncode != 0:
            git(project_dir, "rebase", "--abort", check=False)
            raise ServiceError(f"{what}: the remote {branch} has commits that conflict with "
                               "the project's; merge them and rerun") from None
        git(project_dir, *args, credentials=credentials, what=what)
    return PushResult(git(project_dir, "rev-parse", "HEAD").stdout.strip(), changed=True)

