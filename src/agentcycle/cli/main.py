"""`agentcycle`: the entry point; each command is a thin call into the library."""

from __future__ import annotations

import typer

from agentcycle.cli import agents, data, evals, multi, rag, router, workflow
from agentcycle.cli import export as export_cli
from agentcycle.cli import registry as registry_cli
from agentcycle.cli import templates as templates_cli
from agentcycle.cli._common import quiet_libraries
from agentcycle.cli.commands import app_command, demo, doctor, serve, traces
from agentcycle.cli.deploy import deploy as deploy_command
from agentcycle.cli.finetune import finetune
from agentcycle.cli.publish import publish as publish_command

app = typer.Typer(
    help="agentcycle: prototype, fine-tune, deploy, observe and optimize AI agents.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(rag.app, name="rag")
app.add_typer(agents.app, name="agent")
app.add_typer(router.app, name="router")
app.add_typer(evals.app, name="eval")
app.add_typer(multi.app, name="multi")
app.add_typer(workflow.app, name="workflow")
app.add_typer(data.app, name="data")
app.add_typer(registry_cli.app, name="registry")
app.add_typer(export_cli.app, name="export")
app.add_typer(templates_cli.app, name="templates")
app.command(name="finetune-job")(registry_cli.finetune_job)
app.command()(demo)
app.command()(doctor)
app.command()(serve)
app.command()(finetune)
app.command()(traces)
app.command(name="app")(app_command)
app.command(name="deploy")(deploy_command)
app.command(name="new")(templates_cli.new)
app.command(name="publish")(publish_command)


def main() -> None:
    quiet_libraries()
    app()
