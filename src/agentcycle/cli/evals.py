"""`agentcycle eval ...`: run a suite against a target, gate on it, compare two runs."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from agentcycle.cli._common import console, err_console, friendly_errors, print_json, settings

app = typer.Typer(help="Test agents like software: suites, scorers, gates, comparisons.",
                  no_args_is_help=True)


@app.command()
@friendly_errors
def run(
    suite_file: Path = typer.Argument(..., metavar="SUITE", help="The suite's YAML file."),
    target: str | None = typer.Option(
        None, "--target", "-t", help="openai:URL#model | router:FILE#route | app:URL | "
                                     "python:module:function | rag:COLLECTION | "
                                     "agent:KIND?max_steps=4 (default: the suite's)."),
    gate: list[str] = typer.Option([], "--gate", "-g", help="e.g. 'accuracy>=0.7' (repeat; "
                                                            "added to the suite's gates)."),
    concurrency: int = typer.Option(8, "--concurrency", "-c", min=1),
    retries: int = typer.Option(2, min=0, help="Retries per case when the target fails."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Call the target for every case."),
    resume: str | None = typer.Option(None, help="Continue an interrupted run by its id."),
    out: Path | None = typer.Option(None, help="Also write run.json and report.html here."),
    limit: int | None = typer.Option(None, min=1, help="Run the first N cases only."),
    judge: str | None = typer.Option(None, help="Judge model for judged scorers "
                                                "(openai:URL#model); default: the suite's."),
    no_mlflow: bool = typer.Option(False, "--no-mlflow", help="Do not log an MLflow run."),
    as_json: bool = typer.Option(False, "--json", help="Print the run as JSON."),
) -> None:
    """Run SUITE against a target; exit 1 when a gate fails."""
    from agentcycle.cli._common import stop_on_sigterm
    from agentcycle.evals.session import RunOptions, run_cli_suite

    # `kill`/CI cancellation stops like Ctrl-C: run.json is written (so `eval list`
    # shows the run to resume) and a model server the target started is stopped.
    stop_on_sigterm()
    options = RunOptions(target=target, gates=gate, concurrency=concurrency, retries=retries,
                         cache=not no_cache, resume=resume, out=out, limit=limit, judge=judge,
                         mlflow=not no_mlflow)
    show = err_console if as_json else console
    run_, gates = run_cli_suite(suite_file, settings(), options, show)
    if as_json:
        print_json({"run_id": run_.run_id, "metrics": run_.metrics, "tags": run_.tags,
                    "mlflow_run_id": run_.mlflow_run_id,
                    "gates": [{"gate": str(g.gate), "value": g.value, "passed": g.passed}
                              for g in gates]})
    else:
        _print_run(run_, gates)
    if not all(g.passed for g in gates):
        failed = ", ".join(str(g.gate) for g in gates if not g.passed)
        err_console.print(f"[red]gate failed:[/red] {failed}", highlight=False)
        raise typer.Exit(1)
    if run_.results and all(r.error for r in run_.results):
        # Nothing was measured: a CI job must not go green on it, gates or not.
        err_console.print("[red]error:[/red] every case errored; nothing was measured",
                          highlight=False)
        raise typer.Exit(1)


def _print_run(run_, gates) -> None:
    table = Table(title=f"{run_.suite}: {len(run_.results)} cases against {run_.target[:60]}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    keys = ["accuracy", *(f"{s}.{k}" for s in run_.scorers for k in ("mean", "pass_rate")),
            "errors", "p50_latency_ms", "p95_latency_ms", "total_cost_usd", "cases_per_s"]
    for key in keys:
        table.add_row(key, f"{run_.metrics.get(key, 0):.4g}")
    console.print(table)
    if gates:
        gate_table = Table(title="gates")
        for column in ("gate", "value", "result"):
            gate_table.add_column(column)
        for g in gates:
            gate_table.add_row(str(g.gate), f"{g.value:.4g}",
                               "[green]pass[/green]" if g.passed else "[red]FAIL[/red]")
        console.print(gate_table)
    errored = [r for r in run_.results if r.error]
    if errored:
        # The metrics say how many; the user needs to know why (a down server, a bad key).
        console.print(f"[yellow]{len(errored)} of {len(run_.results)} cases errored[/yellow]; "
                      f"case '{errored[0].id}': {errored[0].error}", highlight=False,
                      soft_wrap=True)
    if run_.judge_is_small_local:
        console.print("[yellow]note:[/yellow] the judge is the small local model: judged "
                      "scores are weak evidence.")
    from agentcycle.evals.results import runs_dir

    report = runs_dir(settings()) / run_.run_id / "report.html"
    console.print(f"run {run_.run_id}: {report}"
                  + (f"; MLflow run {run_.mlflow_run_id}" if run_.mlflow_run_id else ""),
                  highlight=False, soft_wrap=True)


@app.command()
@friendly_errors
def compare(
    run_a: str = typer.Argument(..., help="Baseline: a run id or run.json path."),
    run_b: str = typer.Argument(..., help="Candidate: a run id or run.json path."),
    scorer: str | None = typer.Option(None, help="Compare one scorer's verdicts "
                                                 "(default: every scorer passing)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Per-case regressions and improvements of RUN_B against RUN_A, with paired tests."""
    from agentcycle.evals.compare import compare_runs
    from agentcycle.evals.results import load_run

    config = settings()
    result = compare_runs(load_run(run_a, config), load_run(run_b, config), scorer)
    if as_json:
        print_json(result.as_dict())
        return
    for title, changes, style in (("regressions", result.regressions, "red"),
                                  ("improvements", result.improvements, "green")):
        table = Table(title=f"{len(changes)} {title}", title_style=style)
        for column in ("case", "input", "score A", "score B", "answer B"):
            table.add_column(column, overflow="fold")
        for c in changes:
            table.add_row(c.id, c.input[:60], f"{c.score_before:.2f}", f"{c.score_after:.2f}",
                          c.answer_after[:80])
        console.print(table)
    verdict = "significant" if result.significant else "not significant"
    console.print(
        f"{result.matched} cases matched ({result.only_a} only in A, {result.only_b} only in "
        f"B). pass rate {result.accuracy_a:.1%} -> {result.accuracy_b:.1%}; mean score delta "
        f"{result.mean_score_delta:+.3f}. Exact McNemar p={result.mcnemar_p:.3g}, Wilcoxon "
        f"signed-rank p={result.wilcoxon_p:.3g}: {verdict} at 0.05.", highlight=False)


@app.command(name="list")
@friendly_errors
def list_command(last: int = typer.Option(20, "--last", "-n", min=1),
                 as_json: bool = typer.Option(False, "--json")) -> None:
    """Past eval runs, newest first."""
    from agentcycle.evals.results import list_runs

    runs = list_runs(settings())[:last]
    if as_json:
        print_json([{"run_id": r.run_id, "suite": r.suite, "target": r.target,
                     "started_at": r.started_at, "finished": r.finished, "cases": len(r.results),
                     "accuracy": r.metric("accuracy"), "errors": r.metric("errors")}
                    for r in runs])
        return
    table = Table(title=f"last {len(runs)} eval runs")
    table.add_column("run id", no_wrap=True)
    for column in ("suite", "target", "cases", "accuracy", "errors", "finished"):
        table.add_column(column, overflow="fold")
    for r in runs:
        table.add_row(r.run_id, r.suite, r.target[:40], str(len(r.results)),
                      f"{r.metric('accuracy'):.1%}", f"{r.metric('errors'):.0f}",
                      "yes" if r.finished else "[yellow]no (--resume)[/yellow]")
    console.print(table)
