"""`agentcycle deploy` end to end against a real git server on 127.0.0.1 (git smart HTTP,
token auth) with Gitea's API and ArgoCD's API as stand-ins (tests/gitea_standin.py)."""

from __future__ import annotations

import json
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from gitea_standin import ArgoCDStandin, GiteaStandin
from helpers import cli_run, dead_url

ORG, APP, DOMAIN = "thinkube-deployments", "legal-agent", "thinkube.example"
GITEA_TOKEN, ARGO_TOKEN, HOOK_SECRET = "gitea-0123456789abcdef", "argo-abcdef0123", "hook-5ecret"
ENV_SECRET = "sk-do-not-push-me-42"
HOOK_URL = f"https://argo-events.{DOMAIN}/gitea"

THINKUBE_YAML = """\
apiVersion: thinkube.io/v1
kind: ThinkubeDeployment
spec:
  deployment:
    type: app
  containers:
    - name: agent
      build: .
      port: 8000
      size: small
      health: /health
      test:
        enabled: true
        image: "python:3.12.8-slim-bookworm"
        command: "./run_tests.sh"
  routes:
    - path: /
      to: agent
  dependencies:
    - name: litellm
      type: llm-proxy
      env: LITELLM_ENDPOINT
"""

REJECT = "#!/bin/sh\necho 'policy: pushes are frozen' >&2\nexit 1\n"


@dataclass
class GitOps:
    gitea: GiteaStandin
    argocd: ArgoCDStandin
    project: Path

    def tree(self) -> list[str]:
        return self.gitea.git(ORG, APP, "ls-tree", "-r", "--name-only", "main").split()

    def pushed_holds(self, text: str) -> bool:
        found = subprocess.run(["git", "grep", "-F", "-q", "-e", text, "main"],
                               cwd=self.gitea.bare(ORG, APP), capture_output=True)
        return found.returncode == 0


@pytest.fixture
def gitops(tmp_path, monkeypatch):
    project = tmp_path / APP
    project.mkdir()
    (project / "thinkube.yaml").write_text(THINKUBE_YAML)
    (project / "app.py").write_text("import os\nKEY = os.environ['LITELLM_MASTER_KEY']\n")
    (project / ".env").write_text(f"LITELLM_MASTER_KEY={ENV_SECRET}\n")
    with GiteaStandin(tmp_path / "gitea", token=GITEA_TOKEN,
                      read_only_tokens=("gitea-read-only-token",)) as gitea, \
            ArgoCDStandin(token=ARGO_TOKEN, gitea=gitea) as argocd:
        for name, value in {"GITEA_URL": gitea.url, "GITEA_TOKEN": GITEA_TOKEN,
                            "ARGOCD_SERVER": argocd.url, "ARGOCD_AUTH_TOKEN": ARGO_TOKEN,
                            "DOMAIN_NAME": DOMAIN, "GITEA_WEBHOOK_SECRET": HOOK_SECRET}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("GITEA_ORG", raising=False)
        yield GitOps(gitea, argocd, project)


def assert_clean_error(code: int, output: str, *fragments: str) -> None:
    """Exit 1, no traceback, the progress lines so far and then one `error:` line."""
    assert code == 1, output
    lines = output.strip().splitlines()
    assert "Traceback" not in output and lines[-1].startswith("error:"), output
    assert all(line.startswith("- ") for line in lines[:-1]), output
    for fragment in fragments:
        assert fragment in lines[-1], output


def deploy(project: Path, *args: str) -> tuple[int, str]:
    return cli_run("deploy", str(project), *args)


def assert_deployed(g: GitOps) -> None:
    repo = g.gitea.repos[(ORG, APP)]
    assert repo["private"] is True
    hooks = g.gitea.hooks[(ORG, APP)]
    assert len(hooks) == 1, hooks
    assert hooks[0]["type"] == "gitea" and hooks[0]["events"] == ["push"]
    assert hooks[0]["active"] and hooks[0]["config"] == {"url": HOOK_URL,
                                                          "content_type": "json"}
    assert g.gitea.hook_secrets[hooks[0]["id"]] == HOOK_SECRET
    app = g.argocd.applications[APP]
    assert app["spec"]["source"] == {"repoURL": repo["clone_url"], "targetRevision": "HEAD",
                                     "path": "k8s"}
    assert app["spec"]["destination"]["namespace"] == APP
    assert g.argocd.repositories[repo["clone_url"]]["username"] == "deployer"
    local = subprocess.run(["git", "rev-parse", "HEAD"], cwd=g.project, text=True,
                           capture_output=True, check=True).stdout.strip()
    assert g.gitea.git(ORG, APP, "rev-parse", "main").strip() == local


def test_first_deploy_creates_repo_hook_application_and_pushes_no_secret(gitops):
    code, output = deploy(gitops.project)
    assert code == 0, output
    for step in ("render", "commit", "gitea repository", "webhook", "argocd application",
                 "push"):
        assert f"- {step}:" in output, output
    assert_deployed(gitops)
    tree = gitops.tree()
    assert {"thinkube.yaml", "app.py", "k8s/deployments.yaml", "k8s/kustomization.yaml",
            "k8s/build-workflow.yaml"} <= set(tree), tree
    assert ".env" not in tree
    for secret in (ENV_SECRET, GITEA_TOKEN, ARGO_TOKEN, HOOK_SECRET):
        assert not gitops.pushed_holds(secret), secret
    # The token never lands on disk: not in .git/config, a remote URL or any git file.
    for path in (gitops.project / ".git").rglob("*"):
        if path.is_file():
            assert GITEA_TOKEN.encode() not in path.read_bytes(), path
    assert GITEA_TOKEN not in output and ARGO_TOKEN not in output


def test_second_deploy_changes_nothing_and_dedupes_hooks(gitops):
    assert deploy(gitops.project)[0] == 0
    head = gitops.gitea.git(ORG, APP, "rev-parse", "main")
    gitops.gitea.writes.clear()
    gitops.argocd.writes.clear()
    code, output = deploy(gitops.project)
    assert code == 0, output
    assert "nothing to change" in output and "already up to date" in output, output
    code, output = deploy(gitops.project, "--json")
    report = json.loads(output)
    assert (report["changed"], report["repository"], report["hook"], report["application"],
            report["pushed"]) == (False, "exists", "unchanged", "unchanged", False)
    assert gitops.gitea.writes == [] and gitops.argocd.writes == []
    assert gitops.gitea.git(ORG, APP, "rev-parse", "main") == head
    assert_deployed(gitops)

    # Someone added the same hook twice by hand: the next deploy leaves exactly one.
    hooks = gitops.gitea.hooks[(ORG, APP)]
    hooks.append(hooks[0] | {"id": 99})
    hooks.append(hooks[0] | {"id": 98, "active": False})
    hooks[0]["active"] = False  # and the kept one was switched off
    code, output = deploy(gitops.project)
    assert code == 0 and "updated (2 duplicates deleted)" in output, output
    assert [h["id"] for h in gitops.gitea.hooks[(ORG, APP)]] == [hooks[0]["id"]]
    assert_deployed(gitops)


def test_changed_project_is_pushed_and_the_application_updated(gitops):
    assert deploy(gitops.project)[0] == 0
    (gitops.project / "app.py").write_text("print('v2')\n")
    gitops.argocd.applications[APP]["spec"]["source"]["path"] = "old"  # drifted by hand
    code, output = deploy(gitops.project)
    assert code == 0, output
    assert "argocd application: legal-agent updated" in output, output
    assert "print('v2')" in gitops.gitea.git(ORG, APP, "show", "main:app.py")
    assert_deployed(gitops)


def test_dry_run_writes_and_validates_only(gitops, monkeypatch):
    for name in ("GITEA_TOKEN", "ARGOCD_AUTH_TOKEN"):
        monkeypatch.delenv(name)
    code, output = deploy(gitops.project, "--dry-run")
    assert code == 0, output
    assert "no server touched" in output
    assert (gitops.project / "k8s" / "deployments.yaml").is_file()
    assert gitops.gitea.requests == [] and gitops.argocd.requests == []
    assert not (gitops.project / ".git").exists()


def test_gitea_unreachable_is_one_line_and_a_rerun_succeeds(gitops, monkeypatch):
    with dead_url() as url:
        monkeypatch.setenv("GITEA_URL", url.removesuffix("/v1"))
        code, output = deploy(gitops.project)
    assert_clean_error(code, output, "Gitea at", "unreachable")
    monkeypatch.setenv("GITEA_URL", gitops.gitea.url)
    assert deploy(gitops.project)[0] == 0
    assert_deployed(gitops)


@pytest.mark.parametrize(("token", "status"), [("wrong-token-000", "HTTP 401"),
                                               ("gitea-read-only-token", "HTTP 403")])
def test_gitea_refusing_the_token(gitops, monkeypatch, token, status):
    monkeypatch.setenv("GITEA_TOKEN", token)
    code, output = deploy(gitops.project)
    assert_clean_error(code, output, "Gitea at", "refused the token", status,
                       "user does not exist uid: 0" if status == "HTTP 401" else "scope")
    assert token not in output
    assert gitops.gitea.repos == {} and gitops.argocd.applications == {}
    monkeypatch.setenv("GITEA_TOKEN", GITEA_TOKEN)
    assert deploy(gitops.project)[0] == 0
    assert_deployed(gitops)


@pytest.mark.parametrize("failure", ["token", "unreachable"])
def test_argocd_failing_deletes_the_new_repository(gitops, monkeypatch, failure):
    if failure == "token":
        monkeypatch.setenv("ARGOCD_AUTH_TOKEN", "not-the-argo-token")
        expected = ("ArgoCD at", "refused the token (HTTP 401", "invalid session")
    else:
        with dead_url() as url:
            monkeypatch.setenv("ARGOCD_SERVER", url.removesuffix("/v1"))
        expected = ("ArgoCD at", "unreachable")
    code, output = deploy(gitops.project)
    assert_clean_error(code, output, *expected, "deleted again")
    assert gitops.gitea.repos == {}
    monkeypatch.setenv("ARGOCD_AUTH_TOKEN", ARGO_TOKEN)
    monkeypatch.setenv("ARGOCD_SERVER", gitops.argocd.url)
    assert deploy(gitops.project)[0] == 0
    assert_deployed(gitops)


def test_push_rejected_midway_leaves_no_repository_and_a_rerun_succeeds(gitops):
    gitops.gitea.pre_receive = REJECT  # every new repository refuses pushes
    code, output = deploy(gitops.project)
    assert_clean_error(code, output, "Gitea (git over HTTPS)", "pushes are frozen",
                       "remote rejected HEAD -> main (pre-receive hook declined)",
                       "deleted again")
    assert gitops.gitea.repos == {} and not gitops.gitea.bare(ORG, APP).exists()
    assert gitops.argocd.applications == {}  # the Application this run created went too
    gitops.gitea.pre_receive = None
    code, output = deploy(gitops.project)
    assert code == 0, output
    assert_deployed(gitops)


def test_push_rejected_on_an_existing_repository_keeps_it(gitops):
    assert deploy(gitops.project)[0] == 0
    (gitops.project / "app.py").write_text("print('v2')\n")
    gitops.gitea.set_pre_receive(ORG, APP, REJECT)
    code, output = deploy(gitops.project)
    assert_clean_error(code, output, "pre-receive hook declined")
    assert "deleted again" not in output and (ORG, APP) in gitops.gitea.repos
    gitops.gitea.set_pre_receive(ORG, APP, None)
    assert deploy(gitops.project)[0] == 0
    assert "print('v2')" in gitops.gitea.git(ORG, APP, "show", "main:app.py")


def test_remote_ahead_with_the_image_updaters_commit_is_rebased_on(gitops, tmp_path):
    assert deploy(gitops.project)[0] == 0
    # The platform's build adapter commits an image-tag override to the repository.
    clone = tmp_path / "adapter"
    subprocess.run(["git", "clone", "-q", str(gitops.gitea.bare(ORG, APP)), str(clone)],
                   check=True)
    (clone / "k8s" / f".argocd-source-{APP}.yaml").write_text("kustomize: {}\n")
    ident = ["-c", "user.name=bot", "-c", "user.email=bot@x"]
    subprocess.run(["git", *ident, "add", "-A"], cwd=clone, check=True)
    subprocess.run(["git", *ident, "commit", "-qm", "build: automatic update"], cwd=clone,
                   check=True)
    subprocess.run(["git", "push", "-q", "origin", "main"], cwd=clone, check=True)
    (gitops.project / "app.py").write_text("print('v3')\n")
    code, output = deploy(gitops.project)
    assert code == 0, output
    tree = gitops.tree()
    assert f"k8s/.argocd-source-{APP}.yaml" in tree and "app.py" in tree
    assert "print('v3')" in gitops.gitea.git(ORG, APP, "show", "main:app.py")


def test_a_secret_value_in_the_project_is_refused_before_any_server(gitops):
    (gitops.project / "config.py").write_text(f"TOKEN = '{GITEA_TOKEN}'\n")
    code, output = deploy(gitops.project)
    assert_clean_error(code, output, "config.py holds a secret value")
    assert GITEA_TOKEN not in output
    assert gitops.gitea.requests == [] and gitops.argocd.requests == []


def test_missing_settings_and_bad_project_are_one_line(gitops, monkeypatch, tmp_path):
    monkeypatch.delenv("GITEA_TOKEN")
    assert_clean_error(*deploy(gitops.project), "GITEA_TOKEN")
    monkeypatch.setenv("GITEA_TOKEN", GITEA_TOKEN)
    monkeypatch.setenv("GITEA_ORG", "no-such-org")
    assert_clean_error(*deploy(gitops.project), "Gitea at", "/orgs/no-such-org/repos",
                       "HTTP 404")
    monkeypatch.delenv("GITEA_ORG")
    (tmp_path / "empty").mkdir()
    assert_clean_error(*deploy(tmp_path / "empty", "--dry-run"), "thinkube.yaml")
    assert gitops.gitea.repos == {} and gitops.argocd.writes == []


def test_git_retries_a_lock_race(tmp_path):
    from agentcycle.deploy._git import commit_project

    project = tmp_path / "p"
    project.mkdir()
    (project / "a.txt").write_text("a\n")
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=project, check=True)
    lock = project / ".git" / "index.lock"
    lock.write_text("")  # another git process holds the index ...
    threading.Timer(0.5, lock.unlink).start()  # ... and lets go half a second later
    sha = commit_project(project, "first")
    assert sha and "a.txt" in subprocess.run(["git", "ls-files"], cwd=project, text=True,
                                             capture_output=True).stdout


def test_a_repository_left_empty_by_an_interrupted_run_is_completed(gitops):
    import httpx

    # A run killed between creating the repository and pushing (Ctrl-C, a lost machine)
    # leaves it empty, without hook or Application: the next deploy completes it.
    created = httpx.post(f"{gitops.gitea.url}/api/v1/orgs/{ORG}/repos",
                         headers={"Authorization": f"token {GITEA_TOKEN}"},
                         json={"name": APP, "private": True, "auto_init": False})
    assert created.status_code == 201 and created.json()["empty"] is True
    code, output = deploy(gitops.project)
    assert code == 0 and "legal-agent exists" in output, output
    assert_deployed(gitops)


def test_argocd_is_given_credentials_that_read_the_repository(gitops):
    from agentcycle.deploy.argocd import ArgoCD
    from agentcycle.errors import ServiceError

    assert deploy(gitops.project)[0] == 0  # the stand-in checked them with git ls-remote
    url = gitops.gitea.repos[(ORG, APP)]["clone_url"]
    with ArgoCD(gitops.argocd.url, ARGO_TOKEN) as argo, \
            pytest.raises(ServiceError, match="HTTP 400: Unable to connect to repository"):
        argo.ensure_repository(url, "someone-else", "not-a-token")


def test_a_rotated_gitea_token_is_saved_to_argocd_again(gitops, monkeypatch):
    assert deploy(gitops.project)[0] == 0
    gitops.gitea.token = "gitea-rotated-0123456789"  # the old one stops working
    monkeypatch.setenv("GITEA_TOKEN", gitops.gitea.token)
    code, output = deploy(gitops.project)
    url = gitops.gitea.repos[(ORG, APP)]["clone_url"]
    assert code == 0 and f"argocd repository: {url} updated" in output, output
    assert gitops.argocd.repositories[url]["password"] == gitops.gitea.token


def test_a_dot_env_in_the_git_history_is_refused_before_any_server(gitops):
    ident = ["-c", "user.name=dev", "-c", "user.email=dev@x"]
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=gitops.project, check=True)
    subprocess.run(["git", *ident, "add", "-f", "."], cwd=gitops.project, check=True)
    subprocess.run(["git", *ident, "commit", "-qm", "oops, .env too"], cwd=gitops.project,
                   check=True)
    code, output = deploy(gitops.project)
    assert_clean_error(code, output, ".env is in the project's git history")
    assert gitops.gitea.requests == [] and gitops.argocd.requests == []
