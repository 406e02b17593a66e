"""The documentation site cannot rot: it builds strictly, its code blocks run, the
commands it names exist, and the CLI reference is generated from the code.

The blocks of docs/**/*.md and README.md run page by page (tests/docs_blocks.py says
how, and how to mark a block that must not run here) in a fresh temporary directory
(``AGENTCYCLE_HOME=<tmp>/home``, the venv's bin first on PATH, no platform variables)
holding links to the checkout's ``src/``, ``docs/`` and ``benchmarks/``, so a block may
read the example files a user of the checkout would (``src/agentcycle/examples``).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from docs_blocks import (
    REPO,
    comment_problems,
    doc_pages,
    missing_test,
    rel,
    runnable,
)
from docs_commands import command_mentions, resolve

PAGE_TIMEOUT_S = 300  # like a notebook's budget
# A page whose runnable code uses the bundled chat model runs the real model: slow.
MODEL_USE = re.compile(
    r"chat_model_dir|chat_endpoint|ModelServer|agentcycle (serve|demo|finetune|app)\b|"
    r"agentcycle (rag ask|agent run|eval run|multi ask)\b|\.ask\(|\.run\(")
RUNNER = Path(__file__).parent / "docs_blocks.py"


PAGES_WITH_BLOCKS = [p for p in doc_pages() if runnable(p)]


def _page_param(page: Path):
    code = "".join(b.code for b in runnable(page))
    marks = [pytest.mark.slow] if MODEL_USE.search(code) else []
    return pytest.param(page, id=rel(page), marks=marks)


def _mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    # Not --quiet: it hides the warnings that --strict turns into a failure.
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config),
         "--site-dir", str(site)],
        cwd=config.parent, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})


def test_site_builds_strictly(tmp_path):
    """A broken link, a missing page or a page left out of the nav fails the build."""
    result = _mkdocs_build(REPO / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr[-4000:]}"


def test_a_strict_build_fails_on_a_broken_link_and_a_page_left_out(tmp_path):
    """Our config's validation settings turn both into warnings, and --strict into a failure."""
    config = (REPO / "mkdocs.yml").read_text()
    validation = config[config.index("\nvalidation:") + 1:config.index("\nnav:") + 1]
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("# Home\n\n[gone](gone.md)\n")
    (tmp_path / "docs" / "orphan.md").write_text("# Not in the nav\n")
    (tmp_path / "mkdocs.yml").write_text(
        f"site_name: t\nstrict: true\n{validation}nav:\n  - index.md\n")
    result = _mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0
    assert "gone.md" in result.stderr and "orphan.md" in result.stderr, result.stderr


def test_skip_comments_name_a_reason():
    problems = [p for page in doc_pages() for p in comment_problems(page.read_text(), rel(page))]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", [_page_param(p) for p in PAGES_WITH_BLOCKS])
def test_page_blocks_run(page: Path, tmp_path):
    """The page's blocks, in order, in one fresh working directory; a failure names the
    page and the block's line."""
    from conftest import _PLATFORM_VARS, MODEL_CACHE

    work = tmp_path / "work"
    work.mkdir()
    for name in ("src", "docs", "benchmarks"):
        (work / name).symlink_to(REPO / name)
    blocks_file = tmp_path / "blocks.json"
    blocks_file.write_text(json.dumps([asdict(b) for b in runnable(page)]))
    env = {k: v for k, v in os.environ.items() if k not in _PLATFORM_VARS}
    env.update(AGENTCYCLE_HOME=str(tmp_path / "home"), AGENTCYCLE_CACHE=str(MODEL_CACHE),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
               HF_HUB_OFFLINE="1", LITELLM_LOCAL_MODEL_COST_MAP="True",
               TOKENIZERS_PARALLELISM="false", MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [sys.executable, str(RUNNER), str(blocks_file)], cwd=work, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=PAGE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"{rel(page)}: blocks still running after {PAGE_TIMEOUT_S} s; the last "
                    f"one started:\n{_last_block(output)}\n{output[-3000:]}")
    if process.returncode:
        failed = re.findall(r"DOCS BLOCK FAILED: (.*)", output)
        where = failed[-1] if failed else f"{rel(page)} (runner exit {process.returncode})"
        pytest.fail(f"{where} failed:\n{output[-6000:]}")


def _last_block(output: str) -> str:
    starts = re.findall(r"^--- (.*)$", output, re.MULTILINE)
    return starts[-1] if starts else "(none)"


def test_cli_reference_is_current():
    from agentcycle.cli.help_doc import render

    assert (REPO / "docs" / "cli.md").read_text().strip() == render().strip(), (
        "docs/cli.md is stale: .venv/bin/python -m agentcycle.cli.help_doc > docs/cli.md")


def _scanned_files() -> list[tuple[Path, str]]:
    pages = [(p, "markdown") for p in doc_pages() if p.name != "cli.md"]
    notebooks = sorted((REPO / "notebooks").rglob("*.py"))
    return pages + [(p, "python") for p in notebooks if ".ipynb_checkpoints" not in p.parts]


@pytest.mark.parametrize("path, kind", [pytest.param(p, k, id=rel(p)) for p, k in
                                        _scanned_files()])
def test_named_commands_exist(path: Path, kind: str):
    problems = []
    for page, line, command in command_mentions(path.read_text(), rel(path), kind):
        if problem := resolve(command):
            problems.append(f"{page}:{line}: {problem} (in `{command}`)")
    assert not problems, "\n".join(problems)


def test_the_checks_catch_a_wrong_command_and_a_bad_skip_comment():
    """The checkers themselves: a misspelt command, an unknown option and a skip comment
    without a reason (or naming a test that does not exist) are each reported."""
    page = "\n".join([
        "Run `agentcycle rag ask --nope` or `agentcycle frobnicate`.",
        "| `agentcycle registry register / promote / lisst` | three subcommands |",
        "<!-- docs: skip -->",
        "```bash",
        "agentcycle router serve --config r.yaml \\",
        "    --colour red",
        "```",
        "<!-- docs: skip covered-by: tests/test_docs.py::test_that_is_not_there -->",
        "```python",
        'subprocess.run(["agentcycle", "eval", "runn"])',
        "```",
    ])
    problems = [resolve(c) for _, _, c in command_mentions(page, "x.md", "markdown")]
    assert sorted(problems) == sorted([
        "`agentcycle rag ask` has no option --nope",
        "unknown command `agentcycle frobnicate`",
        "`agentcycle router serve` has no option --colour",
        "unknown command `agentcycle eval runn`",
        "unknown command `agentcycle registry lisst`"])
    comments = comment_problems(page, "x.md")
    assert len(comments) == 2 and "x.md:3" in comments[0] and "x.md:8" in comments[1]
    assert "no test function test_that_is_not_there" in comments[1]
    assert missing_test("tests/test_docs.py::test_site_builds_strictly") is None
