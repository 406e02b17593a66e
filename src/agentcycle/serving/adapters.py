"""LoRA adapters served unmerged over one base model, chosen by the request's model name.

``transformers serve`` cannot do this: it loads every model id it is asked for as a
separate full model (``ModelManager.load_model_and_processor`` keys its cache by path
and calls ``AutoConfig.from_pretrained``, which an adapter directory has no
``config.json`` for), and it has no PEFT code path. So on CPU the gate runs our PEFT
engine (:mod:`agentcycle.serving.adapter_engine`: the base loaded once,
``load_adapter`` per name). On a GPU with vLLM the same adapters map to
``vllm serve BASE --enable-lora --lora-modules NAME=PATH ...``.

This module is the light part (no torch): parsing ``NAME=PATH`` options, finding the
adapter directory, and the vLLM arguments.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from agentcycle.errors import ConfigError, ModelError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# --max-lora-rank accepts these values only (vLLM's LoRAConfig); default 16.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def parse_adapter_options(options: Iterable[str], base_name: str = "base") -> dict[str, Path]:
    """``["legal=PATH", ...]`` -> ``{"legal": adapter_dir}``, each one checked."""
    adapters: dict[str, Path] = {}
    for option in options:
        name, sep, path = option.partition("=")
        name, path = name.strip(), path.strip()
        if not sep or not name or not path:
            raise ConfigError(f"--adapter '{option}': expected NAME=PATH (e.g. legal=./tuned)")
        if name in adapters:
            raise ConfigError(f"--adapter name '{name}' is given twice")
        adapters[name] = Path(path)
    return check_adapters(adapters, base_name)


def check_adapters(adapters: Mapping[str, str | Path], base_name: str) -> dict[str, Path]:
    """Each adapter's directory resolved (see :func:`adapter_dir`), names checked."""
    checked: dict[str, Path] = {}
    for name, path in adapters.items():
        if not _NAME.match(name):
            raise ConfigError(f"adapter name '{name}': use letters, digits, '.', '_' or '-'")
        if name == base_name:
            raise ConfigError(f"adapter name '{name}' is the base model's name: pick another")
        checked[name] = adapter_dir(path, name)
    return checked


def adapter_dir(path: str | Path, name: str = "adapter") -> Path:
    """A PEFT adapter directory: PATH itself, or PATH/adapter of a model that
    :func:`agentcycle.finetune.finetune` wrote (the merged model keeps its adapter there)."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ModelError(f"adapter '{name}': {path} is not a directory")
    for candidate in (folder, folder / "adapter"):
        if (candidate / "adapter_config.json").is_file():
            config = _adapter_config(candidate, name)
            if config.get("peft_type", "LORA") != "LORA":
                raise ModelError(f"adapter '{name}' at {candidate} is a {config['peft_type']} "
                                 "adapter: only LoRA adapters can be served")
            return candidate.resolve()
    raise ModelError(f"adapter '{name}': {path} has no adapter_config.json "
                     "(neither it nor its adapter/ folder is a PEFT adapter)")


def _adapter_config(folder: Path, name: str) -> dict:
    try:
        return json.loads((folder / "adapter_config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"adapter '{name}': unreadable adapter_config.json in {folder} "
                         f"({exc})") from None


def adapter_rank(folder: Path) -> int:
    """The largest LoRA rank in an adapter (``r`` and any per-module ``rank_pattern``)."""
    config = _adapter_config(folder, folder.name)
    return max([int(config.get("r", 8)), *map(int, (config.get("rank_pattern") or {}).values())])


def vllm_lora_args(adapters: Mapping[str, Path]) -> list[str]:
    """``--enable-lora --lora-modules NAME=PATH ... --max-loras N --max-lora-rank R``:
    every adapter resident at once (max-loras defaults to 1, which would swap them per
    batch), and the smallest rank vLLM accepts that holds the largest adapter."""
    if not adapters:
        return []
    rank = max(adapter_rank(path) for path in adapters.values())
    allowed = [r for r in VLLM_LORA_RANKS if r >= rank]
    if not allowed:
        raise ConfigError(f"LoRA rank {rank} is above what vLLM serves ({VLLM_LORA_RANKS[-1]})")
    return ["--enable-lora", "--lora-modules",
            *(f"{name}={path}" for name, path in adapters.items()),
            "--max-loras", str(len(adapters)), "--max-lora-rank", str(allowed[0])]
