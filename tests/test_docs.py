"""The documentation site cannot rot: it builds strictly, its code blocks run, the
commands it names exist, and the CLI reference is generated from the code.

Every ```python / ```bash / ```sh / ```console / ```shell block of docs/**/*.md and
README.md runs, page by page, in order, in one temporary working directory per page
(``AGENTCYCLE_HOME=<tmp>/home``, the venv's bin first on PATH, no platform variables).
The directory holds links to the checkout's ``src/``, ``docs/`` and ``benchmarks/``, so a
block may read the example files a user of the checkout would (``src/agentcycle/examples``).
Python blocks share one namespace per page, like a doctest session (a top-level
``await`` runs on the page's event loop, as in a notebook); bash blocks run
with ``bash -euo pipefail``; in a console block the ``$ `` lines run and the rest is
output. ```text blocks are output and never run.

A block that must not run here has, on the line just before its fence,
``<!-- docs: skip platform-only: WHY -->`` or
``<!-- docs: skip covered-by: tests/test_x.py::test_name -->`` (that test must exist).

This file is also the page runner: ``python tests/test_docs.py BLOCKS.json``.
"""

from __future__ import annotations

import ast
import asyncio
import functools
import inspect
import io
import json
import os
import re
import signal
import subprocess
import sys
import tokenize
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUNNABLE = {"python", "py", "bash", "sh", "console", "shell"}
PAGE_TIMEOUT_S = 300  # like a notebook's budget
# A page whose runnable code uses the bundled chat model runs the real model: slow.
MODEL_USE = re.compile(
    r"chat_model_dir|chat_endpoint|ModelServer|agentcycle (serve|demo|finetune|app)\b|"
    r"agentcycle (rag ask|agent run|eval run|multi ask)\b|\.ask\(|\.run\(")
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
        elif reason["test"] and (missing := _missing_test(reason["test"])):
            problems.append(f"{where}: covered-by {reason['test']}: {missing}")
        if number >= len(lines) or not FENCE.match(lines[number]):
            problems.append(f"{where}: a docs comment must be on the line just before a fence")
    return problems


def _missing_test(spec: str) -> str | None:
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


# --- running one page's blocks (in a subprocess: python tests/test_docs.py BLOCKS.json) ---

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


# --- the tests ---

import pytest  # noqa: E402 - the runner above needs no pytest

PAGES_WITH_BLOCKS = [p for p in doc_pages() if runnable(p)]


def _page_param(page: Path):
    code = "".join(b.code for b in runnable(page))
    marks = [pytest.mark.slow] if MODEL_USE.search(code) else []
    return pytest.param(page, id=rel(page), marks=marks)


def test_site_builds_strictly(tmp_path):
    """A broken link, a missing page or a page left out of the nav fails the build."""
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
         "--config-file", str(REPO / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr[-4000:]}"


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
        [sys.executable, str(Path(__file__)), str(blocks_file)], cwd=work, env=env,
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


# --- every `agentcycle <cmd> [<sub>] [--option]` named resolves against the Typer app ---

COMMAND = re.compile(r"(?:(?<=/bin/)|(?<![\w./-]))agentcycle[ \t]+(?P<rest>[a-z][^\n]*)")
# `from agentcycle import`, `pip install agentcycle`, "Generated by agentcycle from ...".
NOT_A_COMMAND = re.compile(r"\b(from|import|install|by|of|the|with|about)[ \t]+$")
OPTION = re.compile(r"(?<![\w-])--[a-zA-Z][\w-]*")
END_OF_COMMAND = re.compile(r"\s(?:\|\|?|&&|;|2?>)\s|;|`|\)")
LIST_FORM = re.compile(r"""[\[(]\s*["']agentcycle["']\s*,(?P<args>[^\])]*)""")
SHELL_ESCAPE = re.compile(r"#\s*!(?P<command>.*)")  # jupytext's commented `!cmd` magic
CODE_SPAN = re.compile(r"(`+)(?P<code>.+?)\1")
SCANNED_FENCES = {"bash", "sh", "console", "shell", "yaml", "yml", "toml", "make", "makefile",
                  "dockerfile", ""}


def command_mentions(text: str, page: str, kind: str) -> list[tuple[str, int, str]]:
    """(page, line, command text) for every agentcycle command named in code: markdown
    inline code and shell-like fences, or a Python file's string literals."""
    found: list[tuple[str, int, str]] = []
    if kind == "python":
        found += _python_mentions(text, page, 0)
        markdown = "\n".join(_notebook_markdown(text))
    else:
        markdown = text
    fences = fenced_blocks(markdown, page)
    fenced_lines = set()
    for block in fences:
        span = range(block.line, block.line + block.code.count("\n") + 2)
        fenced_lines.update(span)
        if block.lang in {"python", "py"}:
            found += _python_mentions(block.code, page, block.line)
        elif block.lang in SCANNED_FENCES:
            code = re.sub(r"\\\n\s*", " ", block.code)  # continuation lines joined
            for offset, line in enumerate(code.splitlines(), 1):
                line = re.sub(r"(^|\s)#.*", "", line)
                found += [(page, block.line + offset, m) for m in _mentions_in(line)]
    for number, line in enumerate(markdown.splitlines(), 1):
        if number not in fenced_lines:
            for span in CODE_SPAN.finditer(line):
                found += [(page, number, m) for m in _mentions_in(span["code"])]
    return found


def _notebook_markdown(text: str) -> list[str]:
    """A jupytext percent file's markdown cells as markdown, at their original lines."""
    out, in_markdown = [], False
    for line in text.splitlines():
        if line.startswith("# %%"):
            in_markdown = "[markdown]" in line
            out.append("")
        elif in_markdown:
            out.append(line[2:] if line.startswith("# ") else line.lstrip("#"))
        else:
            out.append("")
    return out


def _python_mentions(code: str, page: str, first_line: int) -> list[tuple[str, int, str]]:
    found = []
    for match in LIST_FORM.finditer(code):
        args = re.findall(r"""["']([^"']*)["']""", match["args"])
        line = first_line + code[:match.start()].count("\n") + 1
        found.append((page, line, " ".join(["agentcycle", *args])))
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(code).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return found
    for token in tokens:
        line = first_line + token.start[0]
        if token.type == tokenize.STRING:  # prose too ("agentcycle fast loop"): real roots only
            text = token.string.replace("\\n", "\n")
            found += [(page, line, m) for m in _mentions_in(text) if m.split()[1] in _roots()]
        elif token.type == tokenize.COMMENT and (shell := SHELL_ESCAPE.match(token.string)):
            found += [(page, line, m) for m in _mentions_in(shell["command"])]
        elif token.type == tokenize.ERRORTOKEN and token.string == "!":  # an uncommented !cmd
            rest = code.splitlines()[token.start[0] - 1][token.start[1] + 1:]
            found += [(page, line, m) for m in _mentions_in(rest)]
    return found


def _mentions_in(text: str) -> list[str]:
    text = text.replace("\\|", "/")
    mentions = []
    for match in COMMAND.finditer(text):
        if NOT_A_COMMAND.search(text[:match.start()]):
            continue
        rest = END_OF_COMMAND.split(match["rest"], maxsplit=1)[0]
        mentions.append("agentcycle " + rest.strip())
    return mentions


@functools.cache
def _cli_tree():
    import typer.main

    from agentcycle.cli.main import app

    return typer.main.get_command(app)  # typer's own (vendored) click tree


def _roots() -> set[str]:
    return set(_cli_tree().commands)


def resolve(command: str) -> str | None:
    """None when `command` names a real command and real options, else what is unknown."""
    current = _cli_tree()
    words = command.split()[1:]
    path = ["agentcycle"]
    for word in words:
        if not hasattr(current, "commands") or word.startswith("-"):
            break
        if word not in current.commands:
            if re.fullmatch(r"[a-z][a-z0-9-]*", word) or len(path) == 1:
                return f"unknown command `{' '.join(path)} {word}`"
            break
        current = current.commands[word]
        path.append(word)
    params = current.params
    known = {"--help"} | {o for p in params for o in (*p.opts, *getattr(p, "secondary_opts", ()))}
    unknown = [o for o in OPTION.findall(command) if o.split("=")[0] not in known]
    if unknown:
        return f"`{' '.join(path)}` has no option {', '.join(unknown)}"
    return None


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
                        "unknown command `agentcycle eval runn`"])
    comments = comment_problems(page, "x.md")
    assert len(comments) == 2 and "x.md:2" in comments[0] and "x.md:7" in comments[1]
    assert "no test function test_that_is_not_there" in comments[1]
    assert _missing_test("tests/test_docs.py::test_site_builds_strictly") is None
