"""Unsloth LoRA SFT, on a CUDA GPU with the ``unsloth`` package.

UNTESTED HERE: the development machine has no GPU, so only the refusal below is
tested. The code follows Unsloth's documented recipe (FastLanguageModel, then TRL's
SFTTrainer) and is kept this small on purpose.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from agentcycle.errors import ConfigError, MissingDependency
from agentcycle.finetune.methods import StepCallback, TrainOutput, _hf


def check_available() -> None:
    import torch

    if not torch.cuda.is_available():
        raise ConfigError("unsloth needs a CUDA GPU; none found (use --method lora or qlora)")
    if importlib.util.find_spec("unsloth") is None:
        raise MissingDependency("unsloth", "Unsloth fine-tuning")


def train(examples: list[dict], base_model_dir: Path, work_dir: Path, params: Any,
          on_step: StepCallback | None, resume: bool) -> TrainOutput:  # pragma: no cover
    check_available()
    from unsloth import FastLanguageModel  # imported first: it patches transformers

    from agentcycle.finetune.methods.lora import sft_trainer

    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=str(base_model_dir), max_seq_length=params.max_length, load_in_4bit=False)
    layers = model.config.num_hidden_layers
    top = min(params.top_layers or layers, layers)
    model = FastLanguageModel.get_peft_model(
        model, r=params.rank, lora_alpha=params.alpha, lora_dropout=params.dropout,
        target_modules=list(params.target_modules), random_state=params.seed,
        layers_to_transform=list(range(layers - top, layers)))
    trainer = sft_trainer(model, tokenizer, examples, work_dir, params, on_step)
    return _hf.run(trainer, work_dir, resume)


METHODS = {"unsloth": train}
