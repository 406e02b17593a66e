"""Issue 12's measurement: each AI Lab notebook executed in the small CI profile, the
way tests/test_notebooks.py runs it (nbclient, a temp working dir, a fresh data dir, the
converted bundled model from its cache), with its wall time and the CPU seconds of the
kernel and its children beside it, then the total against the goals: each under 5
minutes, all ten under 20 minutes, on 2 cores.

Run: `python benchmarks/notebook_times.py [--only SUBSTRING] [--profile ci|full]`.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import jupytext
from nbclient import NotebookClient
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
EACH_GOAL_S, ALL_GOAL_S = 300, 1200


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(path: Path, profile: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the kernel and what it started)."""
    notebook = jupytext.read(path)
    kernel = notebook.metadata.get("kernelspec", {}).get("name", "python3")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.update(AGENTCYCLE_NOTEBOOK_PROFILE=profile,
                          AGENTCYCLE_HOME=str(Path(tmp) / "home"))
        cpu, started = children_cpu_s(), time.monotonic()
        NotebookClient(notebook, timeout=EACH_GOAL_S * 4, kernel_name=kernel,
                       resources={"metadata": {"path": tmp}}).execute()
        return time.monotonic() - started, children_cpu_s() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run the notebooks whose path has this")
    parser.add_argument("--profile", default="ci", choices=["ci", "full"])
    args = parser.parse_args()
    os.environ.setdefault("AGENTCYCLE_CACHE", str(REPO / ".agentcycle" / "models"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    paths = [p for p in sorted((REPO / "notebooks").glob("*/[0-9][0-9]_*.py"))
             if args.only in str(p)]
    console = Console(width=80)
    table = Table(title=f"notebooks, {args.profile} profile (load {os.getloadavg()[0]:.1f})")
    for column in ("notebook", "wall s", "CPU s", "goal"):
        table.add_column(column, justify="left" if column == "notebook" else "right")
    total = 0.0
    for path in paths:
        console.print(f"running {path.parent.name}/{path.stem} ...")
        wall, cpu = run(path, args.profile)
        total += wall
        table.add_row(f"{path.parent.name}/{path.stem}", f"{wall:.0f}", f"{cpu:.0f}",
                      "met" if wall < EACH_GOAL_S else "NOT met")
    table.add_row("all", f"{total:.0f}", "", "met" if total < ALL_GOAL_S else "NOT met")
    console.print(table)


if __name__ == "__main__":
    main()
