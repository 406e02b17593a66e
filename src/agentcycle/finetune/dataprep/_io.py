"""Reading and writing dataset files: JSONL, written atomically, never empty."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agentcycle._files import atomic_write
from agentcycle.errors import DataError


def write_jsonl(path: str | Path, records: list[dict[str, Any]], what: str = "records") -> Path:
    """All records or nothing: a temp file renamed over ``path`` (no half-written dataset);
    an empty result is an error, not an empty file a trainer would choke on later."""
    if not records:
        raise DataError(f"no {what} to write to {path}: nothing was produced")
    file = Path(path)
    if file.is_dir():
        raise DataError(f"cannot write {what} to {path}: it is a directory, not a file")
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(json.dumps(_public(r), ensure_ascii=False) + "\n" for r in records)
        atomic_write(file, text)
    except OSError as exc:
        raise DataError(f"cannot write {path}: {exc.strerror or exc}") from None
    return file


def _public(record: dict[str, Any]) -> dict[str, Any]:
    # read_jsonl tags records with their line number; it is not part of the data.
    return {k: v for k, v in record.items() if k != "_line"}


def text_of(content: Any) -> str:
    """A message's content as text (OpenAI content parts joined)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def last_user(messages: list[dict[str, Any]]) -> str:
    users = [text_of(m.get("content")) for m in messages if m.get("role") == "user"]
    return users[-1] if users else ""
