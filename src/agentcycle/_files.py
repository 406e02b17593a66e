"""Files written whole or not at all: the one home of agentcycle's atomic text write,
and of the check that an output never overwrites what a command reads."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from agentcycle.errors import DataError


def new_file_mode(mode: int = 0o666) -> int:
    """``mode`` less the process's umask: what a plain open() or mkdir() would give."""
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


def atomic_write(path: Path, text: str) -> None:
    """``text`` into ``path`` through a temp file beside it, renamed over it: a reader
    (or a crash) sees the old file or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        # mkstemp makes the file owner-only; a report is meant to be shared (CI
        # artifacts, a web server), so it gets the permissions any new file would.
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)  # no stray temp file beside the output
        raise


def check_outputs(inputs: Mapping[str, Path], outputs: Mapping[str, Path]) -> None:
    """Refuse, before anything is read or written, an output that is an input, another
    output or an existing file of an input folder (what it holds would be lost), or
    that is a folder or under a file (it would fail after another output was written).
    Keys name each path for the message: ``{"--out": path}``."""
    seen: dict[Path, str] = {}
    for name, path in inputs.items():
        seen[Path(os.path.realpath(path))] = name  # realpath: a symlink loop too
    for option, path in outputs.items():
        if path.is_dir():
            raise DataError(f"{option} {path} is a directory; give a file path")
        if any(parent.is_file() for parent in path.parents):
            raise DataError(f"{option} {path}: a part of its path is a file, not a folder")
        where = Path(os.path.realpath(path))
        if where in seen:
            raise DataError(f"{option} and {seen[where]} are the same file ({path}); "
                            f"writing it would destroy {seen[where]}")
        for folder, name in seen.items():
            if where.is_file() and folder.is_dir() and folder in where.parents:
                raise DataError(f"{option} {path} is a file of {name} ({folder}); "
                                "writing it would destroy that file")
        seen[where] = option
