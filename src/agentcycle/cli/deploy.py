"""`agentcycle deploy`: a thin call into agentcycle.deploy.pipeline.

Tokens come from the environment (GITEA_TOKEN, ARGOCD_AUTH_TOKEN, GITEA_WEBHOOK_SECRET)
only: an argument would land in shell history and `ps`.
"""

from __future__ import annotations

from pathlib import Path

import typer

from agentcycle.cli._common import console, friendly_errors, print_json, settings


@friendly_errors
def deploy(
    project_dir: Path = typer.Argument(Path("."), help="The project (with thinkube.yaml)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Write and validate k8s/ only; "
                                 "touch no server."),
    domain: str | None = typer.Option(None, help="The cluster's domain (default: "
                                      "DOMAIN_NAME)."),
    gitea_url: str | None = typer.Option(None, help="Gitea's URL (default: GITEA_URL)."),
    argocd_url: str | None = typer.Option(None, help="ArgoCD's server (default: "
                                          "ARGOCD_SERVER)."),
    org: str | None = typer.Option(None, help="The Gitea organisation (default: GITEA_ORG "
                                   "or thinkube-deployments)."),
    name: str | None = typer.Option(None, help="The app's name (default: thinkube.yaml's "
                                    "metadata.name, else the folder's name)."),
    image_tag: str | None = typer.Option(None, help="The image tag the Deployments run "
                                         "(default: the project's last commit)."),
    webhook_url: str | None = typer.Option(None, help="Where Gitea's push hook posts "
                                           "(default: https://argo-events.DOMAIN/gitea)."),
    branch: str = typer.Option("main", help="The branch pushed and synced."),
    json_output: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Render k8s/ from thinkube.yaml and validate it; commit the project (never .env);
    create the Gitea repository and its push hook, the ArgoCD Application; push.
    GITEA_TOKEN and ARGOCD_AUTH_TOKEN come from the environment. Rerunning changes
    nothing; a failed deploy can be rerun."""
    from dataclasses import asdict

    from agentcycle.deploy.pipeline import DeployOptions
    from agentcycle.deploy.pipeline import deploy as run_deploy

    options = DeployOptions.from_settings(
        settings(), domain=domain, gitea_url=gitea_url, argocd_server=argocd_url, org=org,
        app_name=name, image_tag=image_tag, webhook_url=webhook_url, branch=branch)

    def step(what: str, detail: str) -> None:
        if not json_output:
            console.print(f"- {what}: {detail}", highlight=False, soft_wrap=True)

    report = run_deploy(project_dir, options, dry_run=dry_run, progress=step)
    if json_output:
        print_json(asdict(report) | {"changed": report.changed})
    elif dry_run:
        console.print(f"dry run: {len(report.files)} files written to "
                      f"{project_dir / 'k8s'}; no server touched", highlight=False,
                      soft_wrap=True)
    else:
        console.print(f"deployed {report.app}: "
                      + ("changed" if report.changed else "nothing to change"),
                      highlight=False, soft_wrap=True)
