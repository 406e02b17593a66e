"""Reading JSONL files: every error names the file and the line. One home for the
evals' datasets and the fine-tuning data alike."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agentcycle.errors import DataError


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Parse a JSONL file; every error names the file and the line."""
    file = Path(path)
    if not file.is_file():
        raise DataError(f"data file not found: {path}")
    records = []
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
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
    if not records:
        raise DataError(f"{path}: no examples (the file is empty)")
    return records
