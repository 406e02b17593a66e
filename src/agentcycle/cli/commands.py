"""The top-level commands: demo, doctor, serve, traces, app (finetune: cli/finetune.py)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from agentcycle.cli._common import (
    AnswerForm,
    console,
    friendly_errors,
    print_json,
    settings,
    stop_on_sigterm,
)
from agentcycle.errors import ServiceError


@friendly_errors
def demo(
    seed: int = typer.Option(7, help="Seed of the training data choice and the fine-tune."),
    full: bool = typer.Option(False, "--full", help="The longer recipe: every training "
                              "wording and tool record, every test case."),
    tools: bool = typer.Option(True, "--tools/--no-tools", help="Also fine-tune and "
                               "evaluate tool use."),
    test_limit: int | None = typer.Option(None, help="Evaluate RAG on the first N test cases."),
    tool_test_limit: int | None = typer.Option(None, help="Evaluate tool use on N "
                                               "held-out cases spread over the suite "
                                               "(default 40; --full: all)."),
    wordings_per_fact: int | None = typer.Option(None, help="RAG training questions per fact "
                                                 "(default 2; --full: 6)."),
    epochs: float = typer.Option(2.0),
    lr: float = typer.Option(2e-3, help="Learning rate."),
    max_steps: int = typer.Option(-1, help="Stop fine-tuning after N steps (-1: epochs)."),
    top_k: int = typer.Option(1, help="Passages retrieved per question."),
    keep_sentences: int = typer.Option(2, min=0, help="Cut the passages to their N "
                                       "sentences closest to the question (0: whole)."),
    top_layers: int | None = typer.Option(
        None, help="LoRA on the top N layers (default 8, 16 with --full; 0: all; slower)."),
    answer_form: AnswerForm = typer.Option(
        "quote", help="RAG training answers: quote the supporting sentence, then the fact; "
                      "or the short answer."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Ask the base model again "
                                  "instead of reusing its answers from an earlier demo "
                                  "(reused only when its weights, the data, the settings "
                                  "and agentcycle's code are unchanged)."),
) -> None:
    """Run the whole lifecycle on the legal example and write a report."""
    from agentcycle.demo import DemoOptions, default_params, run_demo

    params = dataclasses.replace(default_params(full), epochs=epochs, learning_rate=lr,
                                 max_steps=max_steps, seed=seed)
    if top_layers is not None:
        params.top_layers = top_layers or None  # 0: every layer
    chosen = {"seed": seed, "tools": tools, "test_limit": test_limit, "top_k": top_k,
              "keep_sentences": keep_sentences or None,
              "params": params, "answer_form": answer_form.value,
              "cache_base": not no_cache}
    if tool_test_limit is not None:
        chosen["tool_test_limit"] = tool_test_limit
    if wordings_per_fact is not None:
        chosen["wordings_per_fact"] = wordings_per_fact
    options = DemoOptions.full(**chosen) if full else DemoOptions(**chosen)
    stop_on_sigterm()  # its `with` blocks stop the model servers on SIGTERM too
    result = run_demo(settings(), options, console)
    console.print(_rag_table(result))
    if result.tool_summaries:
        console.print(_tool_table(result))
    if result.base_answers_cached:
        console.print(f"the base model's {result.base_answers_cached} answers came from an "
                      "earlier demo (same weights, data, settings and code; --no-cache asks "
                      "it again)")
    console.print(f"report: {result.report_dir / 'report.md'} (+ report.json, report.png); "
                  f"took {result.seconds:.0f} s")


def _rag_table(result) -> Table:
    from agentcycle.report import accuracy_passes, paired_test

    table = Table(title="RAG, legal test split: base vs fine-tuned")
    for column in ("model", "accuracy (95% CI)", "p50 ms", "$ per 1K tok", "errors"):
        table.add_column(column)
    for s in result.summaries:
        low, high = s.accuracy_ci95
        table.add_row(s.label, f"{s.accuracy:.1%} ({low:.0%}-{high:.0%})",
                      f"{s.p50_latency_ms:.0f}", f"{s.cost_per_1k_tokens:.5f}", str(s.errors))
    if len(result.summaries) >= 2:
        fixed, broken, p = paired_test(accuracy_passes(result.summaries[0]),
                                       accuracy_passes(result.summaries[1]))
        table.caption = f"{fixed} fixed, {broken} broken; exact McNemar p = {p:.2g}"
    return table


def _tool_table(result) -> Table:
    from agentcycle.report import TOOL_FIGURES, paired_test

    table = Table(title="Tool use, held-out prompts: base vs fine-tuned")
    table.add_column("figure")
    for t in result.tool_summaries:
        table.add_column(t.label)
    figures = [t.figures for t in result.tool_summaries]
    for key, title in TOOL_FIGURES:
        table.add_row(title, *["n/a" if f[key] is None else f"{f[key]:.1%}" for f in figures])
    if len(result.tool_summaries) >= 2:
        fixed, broken, p = paired_test(result.tool_summaries[0].passed(),
                                       result.tool_summaries[1].passed())
        table.caption = f"{fixed} fixed, {broken} broken; exact McNemar p = {p:.2g}"
    return table


@friendly_errors
def doctor(as_json: bool = typer.Option(False, "--json")) -> None:
    """Show each service: the platform's real one (URL, reachable?) or the embedded one.
    Exits 1 when a configured service is unreachable (a script or probe can gate on it)."""
    from agentcycle.discovery import discover

    rows = discover(settings())
    down = [r.service for r in rows if r.reachable is False]
    if as_json:
        print_json([r.as_dict() for r in rows])
    else:
        table = Table(title="agentcycle services")
        for column in ("service", "mode", "location", "reachable", "detail"):
            table.add_column(column, overflow="fold")
        marks = {True: "[green]yes[/green]", False: "[red]no[/red]", None: "-"}
        for r in rows:
            table.add_row(r.service, r.mode, r.location, marks[r.reachable], r.detail)
        console.print(table)
    if down:
        raise ServiceError(f"unreachable: {', '.join(down)} (see doctor's detail column; "
                           "unset a service's variables to use its embedded default)")


@friendly_errors
def serve(
    model_dir: str | None = typer.Argument(None, help="HF model dir or models:/NAME@ALIAS "
                                                      "(default: bundled)."),
    port: int = typer.Option(8000),
    host: str = typer.Option("127.0.0.1"),
    api_key: str | None = typer.Option(None, envvar="AGENTCYCLE_API_KEY",
                                       help="Refuse requests without this bearer key."),
    model_name: str | None = typer.Option(None, help="The name clients ask for."),
    engine: str = typer.Option("auto", help="auto | transformers | vllm"),
    adapter: list[str] = typer.Option(
        [], "--adapter", help="NAME=PATH: a LoRA adapter (or a tuned model dir with "
        "adapter/) served unmerged over the base as model NAME; repeatable."),
) -> None:
    """Serve a base or fine-tuned model over OpenAI-compatible HTTP until Ctrl-C."""
    from agentcycle.models import chat_model_dir
    from agentcycle.models.registry import resolve_model
    from agentcycle.router.proxy import check_port
    from agentcycle.serving import ModelServer
    from agentcycle.serving.adapters import parse_adapter_options
    from agentcycle.serving.server import choose_engine

    check_port(host, port)  # before the model loads: a taken port is one error line
    choose_engine(engine)  # and an unknown engine, before a model is converted
    folder = resolve_model(model_dir, settings()) if model_dir else chat_model_dir(settings())
    server = ModelServer(folder, port=port, host=host, api_key=api_key, model_name=model_name,
                         engine=engine, adapters=parse_adapter_options(
                             adapter, model_name or "base") if adapter else None)
    console.print(f"starting {server.engine} for {server.model_dir} ...")
    stop_on_sigterm()
    with server:
        console.print(f"serving {', '.join(repr(n) for n in server.model_names)} at "
                      f"{server.base_url}"
                      + (" (API key required)" if api_key else ""))
        console.print(server.base_url, highlight=False, soft_wrap=True)
        try:
            while server._process and server._process.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass


@friendly_errors
def traces(last: int = typer.Option(10, "--last", "-n", min=1),
           as_json: bool = typer.Option(False, "--json")) -> None:
    """The newest agent runs from the trace store."""
    from dataclasses import asdict

    from agentcycle.observe import list_traces

    rows = list_traces(settings(), last)
    if as_json:
        print_json([asdict(r) for r in rows])
        return
    # Readable at 80 columns: compact cells that never wrap, and the question (one
    # line, cut with an ellipsis) takes whatever width is left.
    table = Table(title=f"last {len(rows)} traces", box=None, collapse_padding=True,
                  show_edge=False)
    for column in ("time", "name", "status", "s", "model", "tokens", "cost $"):
        table.add_column(column, no_wrap=True)
    table.add_column("question", min_width=12)
    for r in rows:
        table.add_row(r.time[5:16], r.name, r.status,
                      f"{r.latency_ms / 1000:.1f}", r.model,
                      f"{r.prompt_tokens}/{r.completion_tokens}", f"{r.cost_usd:.4f}",
                      Text(r.question, no_wrap=True, overflow="ellipsis"))
    console.print(table)


@friendly_errors
def app_command(
    agent: str = typer.Option("rag", "--agent", "-a", help="The agent kind to serve: rag, "
                              "tools, multi, workflow, or a user's agent (module:function)."),
    collection: str | None = typer.Option(None, "--collection", "-c",
                                          help="Default: the legal example's."),
    model: str | None = typer.Option(
        None, help="Model dir (e.g. .agentcycle/demo/legal-tuned) or served model name."),
    top_k: int = typer.Option(3, min=1, help="Passages retrieved per question (the demo's "
                                             "tuned model was trained with 1)."),
    keep_sentences: int | None = typer.Option(
        None, min=1, help="Cut the passages to their N sentences closest to the question "
                          "(the demo's tuned model was trained with 2)."),
    tool: list[str] = typer.Option([], "--tool", help="tools: a module:function to offer "
                                                      "besides the legal tools (repeatable)."),
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(8080),
    keys_file: Path | None = typer.Option(
        None, "--keys-file", help="API keys, one name=key a line (also AGENTCYCLE_API_KEYS"
        "=name=key,...); the names show in traces and /v1/stats."),
    rate_limit: int | None = typer.Option(None, "--rate-limit", min=1,
                                          help="Requests per minute per key (default 60)."),
    tokens_per_day: int | None = typer.Option(None, "--tokens-per-day", min=1,
                                              help="Tokens per key and UTC day."),
    max_concurrency: int | None = typer.Option(
        None, "--max-concurrency", min=1, help="Agent runs at once (default 4); more wait "
        "in a bounded queue, then get 503 with Retry-After."),
    cors_origin: list[str] = typer.Option([], "--cors-origin", help="An origin allowed by "
                                          "CORS (repeatable); none: CORS off."),
    insecure: bool = typer.Option(False, "--insecure", help="Serve a non-loopback address "
                                  "without API keys."),
) -> None:
    """Serve an agent as a FastAPI app (/v1/ask, /v1/feedback, /v1/stats, /health, /ready,
    /docs, Gradio at /ui) behind API keys, rate limits and size bounds."""
    import uvicorn

    from agentcycle.app import AppPolicy, create_app
    from agentcycle.app.policy import is_loopback
    from agentcycle.errors import ConfigError
    from agentcycle.router.proxy import check_port
    from agentcycle.router.shared_state import open_state
    from agentcycle.session import AgentOptions, agent_session

    overrides = {name: value for name, value in {
        "requests_per_minute": rate_limit, "tokens_per_day": tokens_per_day,
        "max_concurrency": max_concurrency, "cors_origins": cors_origin}.items()
        if value}
    current = settings()
    if keys_file is not None:
        current.api_keys_file = keys_file
    policy = AppPolicy.from_settings(current, **overrides)
    check_port(host, port)  # before the model starts: a taken port is one error line
    if policy.open and not is_loopback(host):
        if not insecure:
            raise ConfigError(f"refusing to serve {host} without API keys: set "
                              "AGENTCYCLE_API_KEYS=name=key (or --keys-file), or pass "
                              "--insecure")
        console.print(f"[yellow]warning: {host} is served without API keys (--insecure)")
    elif policy.open:
        console.print("[yellow]warning: no API keys: anyone on this machine may call the "
                      "app (set AGENTCYCLE_API_KEYS or --keys-file)")
    stop_on_sigterm()
    options = AgentOptions(collection=collection, model=model, top_k=top_k,
                           keep_sentences=keep_sentences, tools=tool)
    state = open_state(current)  # per-key limits: shared by replicas when REDIS_URL is set
    with agent_session(current, agent, options) as session:
        console.print(f"{agent} agent app on http://{host}:{port} (UI at /ui, API docs at "
                      f"/docs); key limits: {state.describe()}")
        app = create_app(session.agent, ready_checks=session.ready_checks,
                         title=f"agentcycle {agent} agent", policy=policy, state=state)
        uvicorn.run(app, host=host, port=port, log_level="warning")
