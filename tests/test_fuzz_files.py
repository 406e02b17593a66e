"""Hostile files into every command that reads one: router YAML (`router check`), eval
suites and their JSONL/CSV datasets (`eval run`), fine-tuning JSONL (`data validate`,
`data split`, `finetune`), thinkube.yaml (`deploy --dry-run`) and corpus folders
(`rag ingest`): empty, binary, invalid UTF-8, NUL bytes, huge lines, deep nesting,
YAML alias bombs, wrong types, directories and symlink loops where a file should be,
and seeded mutations of valid files. The contract: a non-zero exit with one `error:`
line, never a traceback, never a hang (each run bounded)."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

SEED = 2026

ROUTER = b"""backends:
  - name: local
    model: openai/base
    api_base: http://127.0.0.1:9/v1
routes:
  default: [local]
"""
SUITE = b"""name: s
scorers: [exact_match]
cases:
  - {input: "What is 2+2?", reference: "4"}
"""
THINKUBE = b"""apiVersion: thinkube.io/v1
kind: ThinkubeDeployment
metadata:
  name: agent
spec:
  deployment:
    type: app
  containers:
    - name: app
      build: .
      port: 8000
"""
SFT = (b'{"messages": [{"role": "user", "content": "Q?"}, '
       b'{"role": "assistant", "content": "A."}]}\n')

BOMB = b"a: &a [x, x, x, x, x, x, x, x, x]\n" + b"".join(
    b"%c: &%c [*%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c]\n" % ((c, c) + (c - 1,) * 9)
    for c in range(ord("b"), ord("j")))

YAML_CASES: list[tuple[str, bytes]] = [
    ("empty", b""), ("null", b"null\n"), ("a list", b"- a\n- b\n"), ("a number", b"42\n"),
    ("syntax", b"a: [1, 2\nb: {"), ("tab indent", b"a:\n\tb: 1\n"),
    ("binary", bytes(range(256)) * 4), ("invalid utf-8", b"name: \xff\xfe\xfd\n"),
    ("nul byte", b"name: a\x00b\n"), ("deep nesting", b"[" * 50_000 + b"]" * 50_000),
    ("deep mapping", b"a:\n" + b"".join(b" " * i + b"a:\n" for i in range(1, 3000))),
    ("alias bomb", BOMB), ("huge line", b"name: " + b"x" * 5_000_000 + b"\n"),
    ("duplicate keys", b"name: a\nname: b\n"), ("python tag", b"!!python/object:os.system x\n"),
    ("wrong types", b"backends: 5\nroutes: [1]\nname: [1]\ncases: 7\nscorers: {a: 1}\n"
                    b"spec: 3\nmetadata: []\n"),
]

JSONL_CASES: list[tuple[str, bytes]] = [
    ("empty", b""), ("blank lines", b"\n\n  \n"), ("not json", b"hello\n"),
    ("a list", b"[1, 2]\n"), ("truncated", SFT[:30] + b"\n"), ("invalid utf-8", b"\xff\xfe\n"),
    ("nul byte", SFT[:-2] + b"\x00\n"), ("deep nesting", b"[" * 100_000 + b"]" * 100_000),
    ("huge line", b'{"messages": [{"role": "user", "content": "' + b"x" * 5_000_000 + b'"}]}'),
    ("wrong types", b'{"messages": 5}\n{"messages": [1, 2]}\n{"messages": [{"role": 5}]}\n'),
    ("nan", b'{"messages": NaN}\n'), ("binary", bytes(range(256)) * 4),
]

CSV_CASES: list[tuple[str, bytes]] = [
    ("empty", b""), ("header only", b"input,reference\n"), ("binary", bytes(range(256)) * 4),
    ("invalid utf-8", b"input,reference\n\xff,\xfe\n"), ("nul byte", b"input,reference\na\x00,b\n"),
    ("huge field", b"input,reference\n" + b"x" * 2_000_000 + b",b\n"),
    ("unclosed quote", b'input,reference\n"a,b\n'), ("ragged", b"input\na,b,c,d\n"),
]


def mutations(valid: bytes, count: int, seed: int = SEED) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        data = bytearray(valid)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(data))
            op = rng.choice(("flip", "cut", "insert"))
            if op == "flip":
                data[at] = rng.choice(b'\x00\xff:[]{}-&*!"\t\n ')
            elif op == "cut":
                del data[at:at + rng.randint(1, 12)]
            else:
                data[at:at] = bytes(rng.choice(b":[]{}-&*!|>\"'\t\n x") for _ in range(3))
        out.append((f"mutation {i}", bytes(data)))
    return out


def check(args: list[str], label: str) -> None:
    from typer.testing import CliRunner

    from agentcycle.cli.main import app

    started = time.monotonic()
    result = CliRunner().invoke(app, args)
    code, output = result.exit_code, result.output
    where = f"{label}: exit {code}\n{output[-1500:]}"
    # CliRunner keeps an escaped exception out of the output: a traceback all the same
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        where, repr(result.exception))
    assert time.monotonic() - started < 30, f"{label}: slow"
    assert "Traceback" not in output and 'File "' not in output, where
    if code == 0:  # a mutation that is still a valid file: fine, if it says nothing odd
        return
    assert code == 1, where
    lines = [line for line in output.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, where


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def odd_paths(tmp: Path, name: str) -> list[tuple[str, Path]]:
    """Where a file should be: a directory, a symlink loop, a dangling link."""
    folder = tmp / "dir" / name
    folder.mkdir(parents=True)
    loop = tmp / "loop" / name
    loop.parent.mkdir()
    os.symlink(loop, loop)
    dangling = tmp / "dangling" / name
    dangling.parent.mkdir()
    os.symlink(tmp / "nowhere", dangling)
    return [("a directory", folder), ("a symlink loop", loop), ("a dangling link", dangling)]


def test_router_configs(tmp_path):
    for i, (label, data) in enumerate(YAML_CASES + mutations(ROUTER, 40)):
        check(["router", "check", "-c", str(write(tmp_path / f"{i}.yaml", data))], label)
    for label, path in odd_paths(tmp_path, "router.yaml"):
        check(["router", "check", "-c", str(path)], label)


def test_eval_suites_and_their_datasets(tmp_path):
    def run(suite: Path, label: str) -> None:
        check(["eval", "run", str(suite), "--no-mlflow", "--target", "python:os:getcwd"], label)

    for i, (label, data) in enumerate(YAML_CASES + mutations(SUITE, 30)):
        if label.startswith("mutation"):  # a valid mutation would run: give it no target
            check(["eval", "run", str(write(tmp_path / f"{i}.yaml", data)), "--no-mlflow",
                   "--target", "nope:"], label)
            continue
        run(write(tmp_path / f"{i}.yaml", data), label)
    for kind, cases in (("jsonl", JSONL_CASES), ("csv", CSV_CASES)):
        for i, (label, data) in enumerate(cases):
            folder = tmp_path / f"{kind}{i}"
            write(folder / f"cases.{kind}", data)
            suite = write(folder / "suite.yaml", b"name: s\nscorers: [exact_match]\n"
                          b"dataset: {path: cases.%s, fields: {input: input, reference: "
                          b"reference}}\n" % kind.encode())
            run(suite, f"{kind} {label}")
    for label, path in odd_paths(tmp_path, "suite.yaml"):
        run(path, label)


@pytest.mark.parametrize("command", [["data", "validate"], ["data", "split"]])
def test_finetuning_jsonl(command, tmp_path):
    for i, (label, data) in enumerate(JSONL_CASES):
        check([*command, str(write(tmp_path / f"{i}.jsonl", data))], label)
    for label, path in odd_paths(tmp_path, "data.jsonl"):
        check([*command, str(path)], label)


def test_finetune_refuses_bad_data_before_any_model(tmp_path):
    for i, (label, data) in enumerate(JSONL_CASES):
        check(["finetune", str(write(tmp_path / f"{i}.jsonl", data)), "--out",
               str(tmp_path / "out")], label)
        assert not (tmp_path / "out").exists(), label  # nothing half-written


def test_thinkube_yaml(tmp_path):
    for i, (label, data) in enumerate(YAML_CASES + mutations(THINKUBE, 30)):
        project = tmp_path / f"p{i}"
        write(project / "thinkube.yaml", data)
        check(["deploy", "--dry-run", str(project)], label)


def test_corpus_folders(tmp_path):
    """Refused before the embedding model loads: each case is fast."""
    cases = {
        "binary .md": {"a.md": bytes(range(256))},
        "invalid utf-8": {"a.md": b"# A\n\xff\xfe\n"},
        "nul byte": {"a.txt": b"text\x00more"},
        "only empty files": {"a.md": b"", "b.txt": b"  \n"},
        "no text files": {"a.pdf": b"%PDF-1.4", "b.bin": bytes(100)},
    }
    for i, (label, files) in enumerate(cases.items()):
        folder = tmp_path / f"c{i}"
        for name, data in files.items():
            write(folder / name, data)
        check(["rag", "ingest", str(folder), "-c", "fuzz"], label)
    loop = tmp_path / "loop"
    loop.mkdir()
    write(loop / "bad.md", b"\xff")
    os.symlink(loop, loop / "again")  # a directory symlink loop
    os.symlink(loop / "self.md", loop / "self.md")  # a file symlink loop
    check(["rag", "ingest", str(loop), "-c", "fuzz"], "symlink loops")
    # Without the bad file: loops, a FIFO, a dangling link and a folder named .md are
    # not documents (reading a FIFO would hang); the one real file is read.
    from agentcycle.rag.documents import load_documents

    (loop / "bad.md").unlink()
    write(loop / "good.md", b"# Good\n\nText.\n")
    os.mkfifo(loop / "pipe.md")
    os.symlink(tmp_path / "nowhere.md", loop / "dangling.md")
    (loop / "dir.md").mkdir()
    assert [d.source for d in load_documents(loop)] == ["good.md"]
    (tmp_path / "folder.md").mkdir()
    write(tmp_path / "folder.md" / "x.bin", b"")
    check(["rag", "ingest", str(tmp_path / "folder.md"), "-c", "fuzz"], "a folder named .md")
    check(["rag", "ingest", str(tmp_path / "nowhere"), "-c", "fuzz"], "no folder")
