"""`agentcycle new` and `agentcycle templates ...`: thin calls into agentcycle.templates."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.table import Table

from agentcycle.cli._common import console, friendly_errors, settings
from agentcycle.errors import ConfigError

app = typer.Typer(help="The agent templates: list, update a project, catalog, export.",
                  no_args_is_help=True)


def _pairs(items: list[str]) -> dict[str, str]:
    data: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--data '{item}': expected key=value")
        data[key.strip()] = value
    return data


@friendly_errors
def new(
    template: str = typer.Argument(..., help="A template name (`agentcycle templates list`)."),
    dest: Path = typer.Argument(..., help="The new project's folder; its name is the "
                                "project's name (e.g. my-agent: a-z, 0-9, dashes)."),
    data: list[str] = typer.Option([], "--data", "-d", help="A template parameter, "
                                   "key=value (repeat)."),
    defaults: bool = typer.Option(False, "--defaults", help="Use defaults for every "
                                  "parameter not given (never ask)."),
) -> None:
    """Create a project from TEMPLATE in DEST (Copier), committed as its first git commit."""
    from agentcycle.templates import new_project

    project = new_project(template, dest, _pairs(data),
                          defaults=defaults or not sys.stdin.isatty(), settings=settings())
    console.print(f"created {project.path} from {project.template} {project.version}",
                  highlight=False, soft_wrap=True)
    if project.secrets:
        console.print("secrets to set before deploying: " + ", ".join(project.secrets),
                      highlight=False, soft_wrap=True)
    console.print(f"next: cd {project.path.name} && make test", highlight=False)


@app.command("list")
@friendly_errors
def list_command() -> None:
    """The templates: name, agent kind, version, description."""
    from agentcycle.templates import list_templates

    table = Table(box=None, pad_edge=False, width=80)
    table.add_column("name", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("version", no_wrap=True)
    table.add_column("description", overflow="ellipsis", no_wrap=True, ratio=1)
    for item in list_templates(settings()):
        table.add_row(item.name, item.kind, item.version, item.description)
    console.print(table)


@app.command()
@friendly_errors
def update(
    project: Path = typer.Argument(Path("."), help="The project (made by `agentcycle new`)."),
) -> None:
    """Apply the template's newest version to PROJECT (copier update); its edits survive."""
    from agentcycle.templates import update_project

    result = update_project(project)
    if result.old_version == result.new_version and not result.changed:
        console.print(f"{result.path.name} is up to date ({result.template} "
                      f"{result.new_version})", highlight=False)
        return
    console.print(f"updated {result.path.name}: {result.template} {result.old_version} -> "
                  f"{result.new_version}, {len(result.changed)} files changed "
                  "(review with git diff, then commit)", highlight=False, soft_wrap=True)
    if result.conflicts:
        console.print("[yellow]conflicts to resolve[/yellow] (<<<<<<< markers): "
                      + ", ".join(result.conflicts), highlight=False, soft_wrap=True)


@app.command()
@friendly_errors
def catalog(
    out: Path = typer.Option(Path("repositories.json"), "--out", "-o"),
    org: str = typer.Option("thinkube", help="The organization the repositories live in."),
    base_url: str = typer.Option("https://github.com", help="The git host's web address "
                                 "(e.g. https://git.example.com for the platform's Gitea)."),
) -> None:
    """Write the template catalog in thinkube-control's repositories.json format."""
    from agentcycle.templates import write_catalog

    path = write_catalog(out, org=org, base_url=base_url, settings=settings())
    console.print(f"wrote {path}", highlight=False)


@app.command()
@friendly_errors
def export(
    dest: Path = typer.Argument(..., help="A folder; each template becomes DEST/<name>."),
    name: list[str] = typer.Option([], "--name", "-n", help="Only this template (repeat)."),
) -> None:
    """Export each template as a git repository with its version tags (to push to Gitea)."""
    from agentcycle.templates import export_templates

    for path in export_templates(dest, name or None, settings=settings()):
        console.print(f"{path}  (git -C {path} push --mirror <gitea-url>/{path.name}.git)",
                      highlight=False, soft_wrap=True)
