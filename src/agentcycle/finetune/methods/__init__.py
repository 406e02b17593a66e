"""Training methods: each one a small module with one ``train`` function.

A method trains and returns the model; :func:`agentcycle.finetune.finetune` does the
rest the same way for all of them (the work dir, resume checks, saving, merging,
MLflow). The contract::

    train(examples, base_model_dir, work_dir, params, on_step, resume) -> TrainOutput

``work_dir`` survives a kill (checkpoints go there every ``params.save_steps``);
``resume`` says to continue from the last checkpoint in it, when there is one.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from agentcycle.errors import ConfigError

StepCallback = Callable[[int, int, float | None], None]


@dataclass
class TrainOutput:
    model: Any  # a PeftModel (adapter not merged) or, for "full", the whole model
    tokenizer: Any
    losses: list[tuple[int, float]]
    steps: int
    tokens: int  # tokens trained on (0 when the method cannot count them)
    resumed_from: int = 0  # the step a resumed run started at
    extra: dict[str, float] = field(default_factory=dict)  # method metrics for MLflow


class Method(Protocol):
    def __call__(self, examples: list[dict], base_model_dir: Path, work_dir: Path, params: Any,
                 on_step: StepCallback | None, resume: bool) -> TrainOutput: ...


# name -> (module, what it is); "lora" picks the fast CPU loop when it is there.
METHODS: dict[str, tuple[str, str]] = {
    "lora": ("lora", "LoRA SFT (fast CPU loop; TRL's SFTTrainer where it cannot run)"),
    "lora-trl": ("lora", "LoRA SFT with TRL's SFTTrainer"),
    "qlora": ("qlora", "LoRA SFT on a 4-bit (bitsandbytes NF4) base"),
    "full": ("full", "all weights, no adapter (small models)"),
    "dpo": ("dpo", "preference tuning (TRL DPOTrainer, LoRA) on prompt/chosen/rejected"),
    "unsloth": ("unsloth", "LoRA SFT with Unsloth (CUDA GPU only)"),
}
# Full fine-tuning moves every weight: a LoRA-sized step would wreck the model.
DEFAULT_LEARNING_RATE = {"full": 2e-5, "dpo": 5e-5}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ConfigError(f"unknown method '{name}' (choose from {', '.join(METHODS)})")
    module = importlib.import_module(f"agentcycle.finetune.methods.{METHODS[name][0]}")
    return module.METHODS[name]


def default_learning_rate(method: str, lora_default: float = 1e-3) -> float:
    return DEFAULT_LEARNING_RATE.get(method, lora_default)


def check_method(name: str) -> None:
    """Refuse a method this machine cannot run, before any model loads."""
    get_method(name)
    module = importlib.import_module(f"agentcycle.finetune.methods.{METHODS[name][0]}")
    check = getattr(module, "check_available", None)
    if check:
        check()
