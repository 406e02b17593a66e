"""The four agent templates' sources, shipped as package data.

Each template is ``sources/_base`` (what every kind shares) with ``sources/<name>``
laid over it: a file in the overlay wins over the base file of the same path.
:func:`assemble` writes that union into a plain folder, ready for Copier (or for
``git init`` + a tag, which ``copier update`` needs).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from agentcycle.errors import ConfigError

_BASE = "_base"
_SKIP = {"__pycache__", ".pytest_cache", ".ruff_cache"}


def _sources_dir() -> Path:
    return Path(__file__).resolve().parent / "sources"


def template_names() -> list[str]:
    """The templates shipped with agentcycle, sorted (``tkt-rag-agent``, ...)."""
    root = _sources_dir()
    return sorted(
        p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))
    )


def _copy_tree(src: Path, dest: Path) -> None:
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if any(part in _SKIP or part.endswith(".pyc") for part in rel.parts):
            continue
        target = dest / rel
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


def assemble(name: str, dest: Path) -> None:
    """Write template ``name`` (the base, then its own files over it) into ``dest``.

    ``dest`` may exist (files already there are overwritten, others kept), so a newer
    version can be assembled over a git checkout of an older one.
    """
    names = template_names()
    if name not in names:
        raise ConfigError(f"unknown template '{name}': choose one of {', '.join(names)}")
    root = _sources_dir()
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    _copy_tree(root / _BASE, dest)
    _copy_tree(root / name, dest)
