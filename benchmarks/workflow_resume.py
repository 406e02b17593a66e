"""A workflow killed between two nodes, resumed in a new process, against the same run
uninterrupted, side by side in one run on the bundled model (or `--scripted`, an
OpenAI-protocol fake, to time the machinery alone):

- final state equal (yes/no): task, research, draft, reviews, revisions, answer, outbox,
  the nodes run and the tokens of each model call;
- research fetches (the side effect before the approval): must be 1 in both runs;
- time per node, and what the crash costs: a new process, reloading the checkpoint.

Usage: python benchmarks/workflow_resume.py [--scripted] [--kill-at review]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TASK = "In one sentence: when must a landlord return a tenant's deposit?"
OPTIONS = dict(required_terms=("21 days",), max_iterations=1, max_tokens=48)


def child(mode: str, thread: str, url: str, model: str, kill_at: str, fetches: str) -> None:
    """One process: run (to the approval), resume (after a crash) or approve a thread."""
    from agentcycle.agents.workflow import build_workflow_agent
    from agentcycle.router import Router
    from agentcycle.router.backends import local_backend
    from agentcycle.settings import Settings

    def researcher(task: str) -> list[str]:
        with open(fetches, "a") as f:
            f.write(thread + "\n")
        return ["§ 7. A landlord returns the deposit within 21 days after the tenancy ends."]

    def hook(node: str, thread_id: str) -> None:
        if node == kill_at:  # the previous node's checkpoint is committed: die here
            os.kill(os.getpid(), signal.SIGKILL)

    backend = local_backend("local", url, model, "bench")
    backend.transport = "direct"  # LiteLLM's first call costs seconds of lazy imports
    router = Router([backend], log_path=False, tracing=False)  # MLflow store setup: seconds
    agent = build_workflow_agent(Settings(), router, researcher=researcher, on_node=hook,
                                 tracing=False, **OPTIONS)
    started = time.perf_counter()
    result = {"run": lambda: agent.run(TASK, thread_id=thread),
              "resume": lambda: agent.resume(thread),
              "approve": lambda: agent.approve(thread)}[mode]()
    print(json.dumps({"status": result.status, "seconds": time.perf_counter() - started}))


def spawn(*args: str) -> tuple[int, dict, float]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True,
                          text=True, timeout=900)
    wall = time.perf_counter() - started
    if done.returncode not in (0, -signal.SIGKILL):
        sys.exit(f"child {args[:2]} failed:\n{done.stderr[-2000:]}")
    line = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "{}"
    return done.returncode, json.loads(line), wall


def comparable(agent, thread: str) -> dict:
    state = dict(agent.graph.get_state({"configurable": {"thread_id": thread}}).values)
    state["steps"] = [s["name"] for s in state["steps"]]
    state["calls"] = [(c["prompt_tokens"], c["completion_tokens"]) for c in state["calls"]]
    outbox = agent.show(thread).outbox
    return {**state, "outbox": outbox and outbox["answer"]}


def per_node(agent, thread: str) -> dict[str, float]:
    totals: dict[str, float] = {}
    for step in agent.show(thread).steps:
        totals[step["name"]] = totals.get(step["name"], 0.0) + step["latency_ms"]
    return totals


def measure(url: str, model: str, kill_at: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from agentcycle.agents.workflow import WorkflowAgent
    from agentcycle.settings import Settings

    fetches = Path(os.environ["AGENTCYCLE_HOME"]) / "fetches.txt"
    walls: dict[str, tuple[float, float]] = {}
    for name, steps in (("ref", [("run", "-"), ("approve", "-")]),
                        ("crash", [("run", kill_at), ("resume", "-"), ("approve", "-")])):
        for mode, kill in steps:
            code, out, wall = spawn(mode, name, url, model, kill, str(fetches))
            walls[f"{name}.{mode}"] = (wall, out.get("seconds", 0.0))
            expected = -signal.SIGKILL if kill != "-" else 0
            if code != expected:
                sys.exit(f"{name} {mode}: exit {code}, expected {expected}")
    with WorkflowAgent(Settings(), tracing=False) as agent:
        equal = comparable(agent, "ref") == comparable(agent, "crash")
        ref, crashed = per_node(agent, "ref"), per_node(agent, "crash")
        revisions = agent.show("ref").iterations
    fetched = fetches.read_text().splitlines()
    table = Table(title=f"workflow killed before '{kill_at}', resumed in a new process")
    table.add_column("node")
    table.add_column("uninterrupted ms", justify="right")
    table.add_column("killed + resumed ms", justify="right")
    for node in ref:
        table.add_row(node, f"{ref[node]:.1f}", f"{crashed.get(node, 0.0):.1f}")
    table.add_row("[bold]nodes total[/bold]", f"{sum(ref.values()):.1f}",
                  f"{sum(crashed.values()):.1f}")
    console = Console()
    console.print(table)
    console.print(f"final state equal: {'yes' if equal else 'NO'}; revisions {revisions}; "
                  f"research fetches: ref {fetched.count('ref')}, "
                  f"crash {fetched.count('crash')}")
    console.print("per process, s: wall (start, imports, store, nodes) / the call itself: "
                  + ", ".join(f"{k} {w:.1f}/{c:.2f}" for k, (w, c) in walls.items()))
    if not equal or fetched.count("crash") != 1:
        sys.exit(1)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scripted", action="store_true",
                        help="an OpenAI-protocol fake instead of the bundled model")
    parser.add_argument("--kill-at", default="review",
                        help="the node the first process dies before (research..finalize)")
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0
    from agentcycle.cli._common import quiet_libraries

    quiet_libraries()
    from agentcycle.settings import Settings

    # A fresh store, but the converted model stays where it is cached.
    os.environ.setdefault("AGENTCYCLE_CACHE", str(Settings().models_dir))
    home = tempfile.mkdtemp(prefix="workflow-bench-")
    os.environ["AGENTCYCLE_HOME"] = home
    for name in ("DATABASE_URL", "POSTGRES_HOST"):
        os.environ.pop(name, None)
    with model_server(args.scripted) as (url, model):
        measure(url, model, args.kill_at)
    return 0


def model_server(scripted: bool):
    import contextlib

    @contextlib.contextmanager
    def serving():
        if scripted:
            sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
            from helpers import BackgroundServer, openai_fake_app

            with BackgroundServer(openai_fake_app("Within three weeks.")) as server:
                yield server.url + "/v1", "scripted"
            return
        from agentcycle.models import chat_model_dir
        from agentcycle.serving import ModelServer
        from agentcycle.settings import Settings

        with ModelServer(chat_model_dir(Settings()), api_key="bench",
                         model_name="bench") as server:
            yield server.base_url, "bench"

    return serving()


if __name__ == "__main__":
    sys.exit(main())
