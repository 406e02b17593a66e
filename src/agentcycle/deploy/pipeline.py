"""`deploy()`: a project's thinkube.yaml -> k8s/ -> Gitea -> ArgoCD, in the platform's order.

1. render `k8s/` from `thinkube.yaml` and validate it offline (nothing is touched before);
   `dry_run` stops here, having written the files;
2. commit the project locally, then `k8s/` (whose image tag is the project's commit);
   refused if a token or the webhook secret would be in it;
3. Gitea: the token's user, then get-or-create the private repository in the org;
4. its one push webhook to Argo Events (`https://argo-events.<domain>/gitea`);
5. ArgoCD: the repository's credentials, then the Application (before the push, so an
   image webhook never fires for an app ArgoCD does not know);
6. push the branch over HTTPS with the token.

Idempotent: a second run finds everything in place and changes nothing. A failure after
this run created the repository deletes it again (and the Application it created), so a
rerun starts clean; any other failure leaves what exists for the rerun to complete.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentcycle.deploy import _git, argocd, gitea
from agentcycle.errors import AgentcycleError, ConfigError

Progress = Callable[[str, str], None]


@dataclass
class DeployOptions:
    """Where to deploy; tokens come from the settings (the environment), never argv."""

    domain: str | None = None
    gitea_url: str | None = None
    gitea_token: str | None = None
    argocd_server: str | None = None
    argocd_token: str | None = None
    webhook_secret: str = ""
    org: str = "thinkube-deployments"
    app_name: str | None = None
    image_tag: str | None = None
    registry: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    webhook_url: str | None = None
    branch: str = "main"
    message: str = "deploy: k8s/ from thinkube.yaml (agentcycle deploy)"

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> DeployOptions:
        def secret(value: Any) -> str | None:
            return value.get_secret_value() if value is not None else None

        values = {"domain": settings.domain_name, "gitea_url": settings.gitea_url,
                  "gitea_token": secret(settings.gitea_token),
                  "argocd_server": settings.argocd_server,
                  "argocd_token": secret(settings.argocd_auth_token),
                  "webhook_secret": secret(settings.gitea_webhook_secret) or "",
                  "org": settings.gitea_org}
        return cls(**(values | {k: v for k, v in overrides.items() if v is not None}))

    def missing(self) -> list[str]:
        """The variables a real (not dry) deploy needs and lacks."""
        needed = {"DOMAIN_NAME": self.domain, "GITEA_URL": self.gitea_url,
                  "GITEA_TOKEN": self.gitea_token, "ARGOCD_SERVER": self.argocd_server,
                  "ARGOCD_AUTH_TOKEN": self.argocd_token}
        return [name for name, value in needed.items() if not value]


@dataclass
class DeployReport:
    app: str
    project_dir: Path
    files: list[str]
    dry_run: bool
    repository: str | None = None  # "created" | "exists"
    repo_url: str | None = None
    hook: str | None = None  # "created" | "updated" | "unchanged"
    credentials: str | None = None
    application: str | None = None
    argocd_project: str = "default"
    commit: str | None = None
    pushed: bool | None = None  # False: the branch already held the commit

    @property
    def changed(self) -> bool:
        return bool(self.repository == "created" or self.pushed
                    or "created" in (self.hook, self.application, self.credentials)
                    or "updated" in (self.hook, self.application, self.credentials))


def _app_name(project_dir: Path, spec: Any, options: DeployOptions) -> str:
    if options.app_name:
        return options.app_name
    name = spec.metadata.name if spec.metadata else None
    return name if name and "{" not in name else project_dir.resolve().name


def _target(project_dir: Path, options: DeployOptions) -> Any:
    from agentcycle.deploy.target import DeployTarget
    from agentcycle.deploy.thinkube import load_thinkube

    if not project_dir.is_dir():
        raise ConfigError(f"{project_dir}: no such project directory")
    spec = load_thinkube(project_dir / "thinkube.yaml")
    if not options.domain:
        raise ConfigError("no domain: pass --domain or set DOMAIN_NAME")
    # The image tag: the last commit outside k8s/ (stable across deploys that only
    # regenerate k8s/, so a second deploy renders the same bytes).
    tag = options.image_tag or _git.source_commit(project_dir) or "initial"
    return DeployTarget.create(
        app_name=_app_name(project_dir, spec, options), domain=options.domain,
        org=options.org, registry=options.registry or "", parameters=options.parameters,
        image_tag=tag)


def render(project_dir: Path, options: DeployOptions, *,
           validate: bool = True) -> tuple[Any, dict[str, str]]:
    """thinkube.yaml -> the k8s/ files, validated offline (nothing written yet)."""
    from agentcycle.deploy.manifests import generate_manifests
    from agentcycle.deploy.validate import validate_manifests

    target = _target(project_dir, options)
    files = generate_manifests(project_dir, target)
    if validate:
        validate_manifests(files)
    return target, files


def deploy(project_dir: Path, options: DeployOptions, *, dry_run: bool = False,
           progress: Progress | None = None) -> DeployReport:
    """Render, validate and (unless `dry_run`) publish the project; see the module doc."""
    from agentcycle.deploy.manifests import check_k8s_is_ours, write_manifests

    say = progress or (lambda step, detail: None)
    project_dir = Path(project_dir)
    check_k8s_is_ours(project_dir)  # before anything is committed
    if not dry_run and (missing := options.missing()):
        raise ConfigError(f"deploy needs {', '.join(missing)} (set in the environment; "
                          "or use --dry-run to render and validate only)")
    target, files = render(project_dir, options)
    say("render", f"{len(files)} files for k8s/ validated")
    if dry_run:
        write_manifests(project_dir, files)
        return DeployReport(target.app_name, project_dir, sorted(files), dry_run)
    secrets = [options.gitea_token or "", options.argocd_token or "", options.webhook_secret]
    _git.commit_project(project_dir, f"{target.app_name}: project for deploy",
                        secrets=secrets, exclude=["k8s"])
    if _git.source_commit(project_dir) != target.image_tag and not options.image_tag:
        # The tag is the commit just made: the files validated above with another tag
        # (DeployTarget checked this one), nothing else differs.
        target, files = render(project_dir, options, validate=False)
    write_manifests(project_dir, files)
    report = DeployReport(target.app_name, project_dir, sorted(files), dry_run)
    report.commit = _git.commit_project(project_dir, options.message, secrets=secrets)
    say("commit", f"{(report.commit or '')[:12]} (images tagged {target.image_tag})")
    with gitea.Gitea(options.gitea_url or "", options.gitea_token or "") as git_server, \
            argocd.ArgoCD(options.argocd_server or "", options.argocd_token or "") as argo:
        user = git_server.whoami()
        repo = git_server.get_repo(options.org, target.app_name)
        if repo is None:
            repo = git_server.create_repo(options.org, target.app_name,
                                          f"{target.app_name}: deployed by agentcycle")
            report.repository = "created"
        else:
            report.repository = "exists"
        report.repo_url = repo.clone_url
        say("gitea repository", f"{options.org}/{target.app_name} {report.repository}")
        try:
            _publish(report, repo, user, target, files, options, git_server, argo, say)
        except AgentcycleError as exc:
            if report.repository != "created":
                raise
            exc.args = (f"{exc} ({_undo(report, repo, git_server, argo)})",)
            raise
        except KeyboardInterrupt:
            if report.repository == "created":
                _undo(report, repo, git_server, argo)
            raise
    return report


def _publish(report: DeployReport, repo: gitea.GiteaRepo, user: str, target: Any,
             files: dict[str, str], options: DeployOptions, git_server: gitea.Gitea,
             argo: argocd.ArgoCD, say: Progress) -> None:
    hook_url = options.webhook_url or f"https://argo-events.{target.domain}/gitea"
    hook = git_server.ensure_push_hook(repo.owner, repo.name, hook_url, options.webhook_secret)
    report.hook = hook.change
    say("webhook", f"push -> {hook_url} {hook.change}"
        + (f" ({hook.duplicates_deleted} duplicates deleted)" if hook.duplicates_deleted else ""))
    token = options.gitea_token or ""
    report.credentials = argo.ensure_repository(repo.clone_url, user, token,
                                                name=target.app_name)
    say("argocd repository", f"{repo.clone_url} {report.credentials}")
    app = _application(files, repo.clone_url)
    report.argocd_project = app["spec"].get("project", "default")
    report.application = argo.ensure_application(app)
    say("argocd application", f"{target.app_name} {report.application}")
    result = _git.push(report.project_dir, repo.clone_url, _git.Credentials(user, token),
                       branch=options.branch)
    report.commit, report.pushed = result.commit, result.changed
    say("push", f"{options.branch} @ {result.commit[:12]} "
        + ("pushed" if result.changed else "already up to date"))


def _application(files: dict[str, str], repo_url: str) -> dict[str, Any]:
    """The generated Application, reading the repository over HTTPS: the URL whose
    credentials were just registered with ArgoCD."""
    import yaml

    from agentcycle.deploy.manifests import APPLICATION_FILE

    app = yaml.safe_load(files[APPLICATION_FILE])
    app["spec"]["source"]["repoURL"] = repo_url
    return app


def _undo(report: DeployReport, repo: gitea.GiteaRepo, git_server: gitea.Gitea,
          argo: argocd.ArgoCD) -> str:
    """Delete what this run created, so the rerun starts from nothing; say what was done."""
    try:
        if report.application == "created":
            argo.delete_application(report.app, report.argocd_project)
        git_server.delete_repo(repo.owner, repo.name)
    except AgentcycleError as exc:
        return (f"the repository {repo.owner}/{repo.name} this run created could not be "
                f"deleted again ({exc}); a rerun completes it")
    return f"the repository {repo.owner}/{repo.name} this run created was deleted again"
