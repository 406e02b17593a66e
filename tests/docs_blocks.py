"""The documentation pages' fenced code blocks: found, their skip comments checked, and
run page by page (``python tests/docs_blocks.py BLOCKS.json``, from tests/test_docs.py).

Every ```python / ```bash / ```sh / ```console / ```shell block runs, in order, in one
working directory per page. Python blocks share one namespace per page, like a doctest
session (a top-level ``await`` runs on the page's event loop, as in a notebook); bash
blocks run with ``bash -euo pipefail``; in a console block the ``$ `` lines run and the
rest is output. ```text blocks are output and never run.

A block that must not run here has, on the line just before its fence,
``<!-- docs: skip platform-only: WHY -->`` or
``<!-- docs: skip covered-by: tests/test_x.py::test_name -->`` (that test must exist).
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import re
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUNNABLE = {"python", "py", "bash", "sh", "console", "shell"}
SKIP_COMMENT = re.compile(r"^\s*<!--\s*docs:(?P<body>.*?)-->\s*$")
SKIP_REASON = re.compile(r"^skip\s+(platform-only:\s*\S.*|covered-by:\s*(?P<test>\S+))$")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<ticks>`{3,}|~{3,})\s*(?P<info>[^`\s]*)")


@dataclass
class Block:
    page: str
    line: int  # the fence's line, 1-based
    lang: str
    code: str
    skip: str | None  # the skip comment's reason, None when the block runs


def doc_pages() -> list[Path]:
    return sorted((REPO / "docs").rglob("*.md")) + [REPO / "README.md"]


def rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def fenced_blocks(text: str, page: str) -> list[Block]:
    """Every fenced block with its language, first line and the skip comment before it."""
    lines, blocks, i = text.splitlines(), [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, ticks = len(match["indent"]), match["ticks"]
        start, body = i, []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(ticks):
            line = lines[i]
            body.append(line[indent:] if not line[:indent].strip() else line.lstrip())
            i += 1
        i += 1
        previous = SKIP_COMMENT.match(lines[start - 1]) if start else None
        blocks.append(Block(page, start + 1, match["info"].lower(), "\n".join(body) + "\n",
                            previous["body"].strip() if previous else None))
    return blocks


def comment_problems(text: str, page: str) -> list[str]:
    """Skip comments with no valid reason, naming a missing test, or not before a fence."""
    problems, lines = [], text.splitlines()
    for number, line in enumerate(lines, 1):
        comment = SKIP_COMMENT.match(line)
        if not comment:
            continue
        where, body = f"{page}:{number}", comment["body"].strip()
        reason = SKIP_REASON.match(body)
        if not reason:
            problems.append(f"{where}: `<!-- docs: {body} -->` needs `skip platform-only: WHY`"
                            " or `skip covered-by: tests/test_x.py::test_name`")
        elif reason["test"] and (missing := missing_test(reason["test"])):
            problems.append(f"{where}: covered-by {reason['test']}: {missing}")
        if number >= len(lines) or not FENCE.match(lines[number]):
            problems.append(f"{where}: a docs comment must be on the line just before a fence")
    return problems


def missing_test(spec: str) -> str | None:
    file, _, name = spec.partition("::")
    path = REPO / file
    if not (file.startswith("tests/") and path.is_file() and name):
        return f"no file {file} (want tests/test_x.py::test_name)"
    *classes, function = name.split("[")[0].split("::")
    scope: list[ast.stmt] = ast.parse(path.read_text()).body
    for cls in classes:
        found = [n for n in scope if isinstance(n, ast.ClassDef) and n.name == cls]
        if not found:
            return f"no class {cls} in {file}"
        scope = found[0].body
    defs = (ast.FunctionDef, ast.AsyncFunctionDef)
    if not any(isinstance(n, defs) and n.name == function for n in scope):
        return f"no test function {function} in {file}"
    return None


def runnable(page: Path) -> list[Block]:
    blocks = fenced_blocks(page.read_text(), rel(page))
    return [b for b in blocks if b.lang in RUNNABLE and b.skip is None]


# --- running one page's blocks (in a subprocess: python tests/docs_blocks.py BLOCKS.json) ---

def _console_commands(code: str) -> str:
    commands = [line[2:] for line in code.splitlines() if line.startswith("$ ")]
    return "\n".join(commands) + "\n" if commands else code


def _run_python(code: str, filename: str, namespace: dict, loop) -> None:
    """One block, like a notebook cell: a top-level `await` runs on the page's loop."""
    compiled = compile(code, filename, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(compiled, namespace)  # exec's twin that hands back the coroutine
    if inspect.iscoroutine(result):
        loop.run_until_complete(result)


def _run_page(blocks: list[Block]) -> int:
    namespace: dict = {"__name__": "__main__"}
    loop = asyncio.new_event_loop()
    for block in blocks:
        where = f"{block.page}:{block.line} ({block.lang} block)"
        print(f"--- {where}", flush=True)
        if block.lang in {"python", "py"}:
            try:
                # Padded so that a traceback's line numbers are the page's.
                _run_python("\n" * block.line + block.code, block.page, namespace, loop)
            except BaseException:  # noqa: BLE001 - the page's failure, reported whole
                traceback.print_exc()
                print(f"DOCS BLOCK FAILED: {where}", flush=True)
                return 1
            continue
        code = _console_commands(block.code) if block.lang == "console" else block.code
        sys.stdout.flush()
        if subprocess.run(["bash", "-euo", "pipefail", "-c", code]).returncode:
            print(f"DOCS BLOCK FAILED: {where}", flush=True)
            return 1
    return 0


if __name__ == "__main__":
    raw = json.loads(Path(sys.argv[1]).read_text())
    sys.exit(_run_page([Block(**b) for b in raw]))
