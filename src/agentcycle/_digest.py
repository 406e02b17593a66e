"""Content hashes of files and folders: data lineage, and cache keys that must change
when a model's weights, a corpus or the code that used them changes."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    _add_file(digest, Path(path))
    return digest.hexdigest()


def tree_sha256(path: str | Path, pattern: str = "*") -> str:
    """The names and bytes of every file under ``path`` matching ``pattern``."""
    root, digest = Path(path), hashlib.sha256()
    for file in sorted(f for f in root.rglob(pattern) if f.is_file()):
        digest.update(file.relative_to(root).as_posix().encode() + b"\0")
        _add_file(digest, file)
    return digest.hexdigest()


def _add_file(digest, path: Path) -> None:
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
