"""Reading JSONL files: every error names the file and the line. One home for the
evals' datasets and the fine-tuning data alike."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, TextIO

from agentcycle.errors import DataError, first_line


def jsonl_lines(path: str | Path) -> list[tuple[int, str]]:
    """The file's non-blank lines with their 1-based numbers; DataError for a missing
    file, a directory, text that is not UTF-8 or a file with no lines."""
    file = Path(path)
    if file.is_dir():
        raise DataError(f"{path} is a directory; give a JSONL file")
    if not file.is_file():
        raise DataError(f"data file not found: {path}")
    try:
        text = file.read_text(encoding="utf-8-sig")  # a BOM (Windows editors) is not data
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not lines:
        raise DataError(f"{path}: no records (the file is empty)")
    return lines


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Parse a JSONL file; every error names the file and the line."""
    records = []
    for number, line in jsonl_lines(path):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: malformed JSON ({exc.msg})") from None
        except RecursionError:
            raise DataError(f"{path}:{number}: malformed JSON (nested too deeply)") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{number}: each line must be a JSON object")
        record["_line"] = number
        records.append(record)
    return records


def open_journal(path: Path) -> TextIO:
    """An append-only journal opened for appending. A torn last line (a kill mid-write)
    is cut off first: appended after it, the next record would be glued to it and both
    lost (or the whole journal refused) when it is read back."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as raw:
        end = raw.seek(0, os.SEEK_END)
        keep = end
        while keep > 0:  # back to just after the last newline
            start = max(0, keep - 65536)
            raw.seek(start)
            block = raw.read(keep - start)
            if b"\n" in block:
                keep = start + block.rindex(b"\n") + 1
                break
            keep = start
        if keep < end:
            raw.truncate(keep)
    return path.open("a", encoding="utf-8")


def journal_records(path: Path, what: str = "journal",
                    advice: str = "") -> list[tuple[int, dict[str, Any]]]:
    """An append-only journal's records with their line numbers. A torn last line (a
    kill mid-write) is dropped; any other damage is a DataError naming the line, never a
    silent gap."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: unreadable {what} ({exc})") from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            if number == len(lines):
                break  # torn by a kill mid-write
            raise DataError(damaged_line(path, number, what, exc, advice)) from None
        if not isinstance(record, dict):
            raise DataError(damaged_line(path, number, what, ValueError(
                f"a JSON {type(record).__name__}, not an object"), advice))
        records.append((number, record))
    return records


def damaged_line(path: Path, number: int, what: str, exc: BaseException,
                 advice: str = "") -> str:
    return f"{path}:{number}: damaged {what} line ({first_line(exc)})" + (f"; {advice}" if advice
                                                                   else "")
