"""The AI Lab notebooks: kept as jupytext percent text (``notebooks/**/NN_*.py``), their
``.ipynb`` generated (``make notebooks``), in sync and stripped of outputs, with no TODO
left, and each executed for real in the small CI profile (its time against the 5-minute
goal recorded, and warned of when over)."""

from __future__ import annotations

import json
import os
import re
import time
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*/[0-9][0-9]_*.py"))
BUDGET_S = 300  # per notebook, on 2 cores (issue 12): a goal, reported, not a gate
# A hang guard, not the goal: a notebook sharing 2 cores with another test file (make
# test runs two at a time) took 352 s once; a stuck cell still fails.
HANG_S = 900
# These reach the suite's model server as a notebook on the platform reaches one (named by
# AGENTCYCLE_SERVER_URL): each saves a server start, ~20 s on 2 cores. The others start
# the bundled model themselves, as on a user's laptop.
ON_A_RUNNING_SERVER = {"agent-dev/02_langgraph_workflows", "agent-dev/04_rag_pipeline",
                       "agent-dev/06_production_deployment",
                       "fine-tuning/03_dataset_preparation"}
TIMES = REPO / ".agentcycle" / "notebook-times.json"

jupytext = pytest.importorskip("jupytext")
nbformat = pytest.importorskip("nbformat")


def _id(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def _sources(notebook) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source.strip()) for cell in notebook.cells]


def test_the_ten_notebooks_exist():
    names = {_id(p) for p in NOTEBOOKS}
    assert names >= ON_A_RUNNING_SERVER
    assert len([n for n in names if n.startswith("agent-dev/")]) == 6, names
    assert len([n for n in names if n.startswith("fine-tuning/")]) == 4, names


@pytest.mark.parametrize("source", NOTEBOOKS, ids=_id)
def test_ipynb_in_sync_and_stripped(source: Path):
    ipynb = source.with_suffix(".ipynb")
    assert ipynb.is_file(), f"{ipynb.name} missing: run `make notebooks`"
    generated = nbformat.read(ipynb, as_version=4)
    assert _sources(generated) == _sources(jupytext.read(source)), (
        f"{ipynb.name} differs from {source.name}: run `make notebooks`")
    for cell in generated.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, (
                f"{ipynb.name} keeps outputs: run `make notebooks`")


@pytest.mark.parametrize("source", NOTEBOOKS, ids=_id)
def test_no_todo_and_a_parameters_cell(source: Path):
    text = source.read_text()
    assert not re.search(r"\bTODO\b|\bFIXME\b", text), f"{source.name} has a TODO"
    code = [c for c in jupytext.read(source).cells if c.cell_type == "code"]
    assert code and "parameters" in code[0].metadata.get("tags", []), (
        f"{source.name}: the first code cell must be tagged `parameters`")
    assert "sized(" in code[0].source or "profile(" in code[0].source, (
        f"{source.name}: the parameters cell must size the run by the profile")


@pytest.mark.slow
@pytest.mark.timeout(HANG_S)
@pytest.mark.parametrize("source", NOTEBOOKS, ids=_id)
def test_notebook_executes(source: Path, tmp_path, monkeypatch, request):
    from nbclient import NotebookClient

    monkeypatch.setenv("AGENTCYCLE_NOTEBOOK_PROFILE", "ci")
    if _id(source) in ON_A_RUNNING_SERVER:
        request.getfixturevalue("base_server_by_name")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline plots are drawn
    notebook = jupytext.read(source)
    kernel = notebook.metadata.get("kernelspec", {}).get("name", "python3")
    if kernel != "python3":  # the CrewAI notebook's kernel lives in CrewAI's environment
        from jupyter_client.kernelspec import KernelSpecManager

        if kernel not in KernelSpecManager().find_kernel_specs():
            pytest.skip(f"no Jupyter kernel '{kernel}': run `make crewai-venv` (CI builds it)")
    client = NotebookClient(notebook, timeout=HANG_S, kernel_name=kernel,
                            resources={"metadata": {"path": str(tmp_path)}})
    started = time.monotonic()
    client.execute()
    elapsed = time.monotonic() - started
    _record(_id(source), elapsed)
    if elapsed > BUDGET_S:  # times vary with the machine and its load: said, not failed
        warnings.warn(f"{source.name} took {elapsed:.0f} s (goal {BUDGET_S} s on 2 cores)",
                      stacklevel=1)


def _record(name: str, seconds: float) -> None:
    """Each notebook's time, for docs/benchmarks.md (`make notebook-times` prints them)."""
    TIMES.parent.mkdir(parents=True, exist_ok=True)
    times = json.loads(TIMES.read_text()) if TIMES.is_file() else {}
    times[name] = round(seconds, 1)
    tmp = TIMES.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(times, indent=1, sort_keys=True))
    tmp.replace(TIMES)
