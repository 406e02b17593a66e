"""LoRA SFT: TRL's SFTTrainer ("lora-trl") and the fast CPU loop ("lora")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentcycle.finetune.methods import StepCallback, TrainOutput, _hf


def sft_trainer(model: Any, tokenizer: Any, examples: list[dict], work_dir: Path, params: Any,
                on_step: StepCallback | None, peft_config: Any = None):
    """An SFTTrainer that learns the answer only, checkpointing into ``work_dir``."""
    import datasets
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    config = SFTConfig(**_hf.trainer_args(params, work_dir), max_length=params.max_length,
                       completion_only_loss=True)  # learn the answer, not to repeat the context
    datasets.disable_progress_bars()
    return SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(examples),
                      processing_class=tokenizer, peft_config=peft_config,
                      callbacks=[_hf.progress_callback(on_step)])


def train_trl(examples: list[dict], base_model_dir: Path, work_dir: Path, params: Any,
              on_step: StepCallback | None, resume: bool) -> TrainOutput:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(params.seed)
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
    trainer = sft_trainer(model, tokenizer, examples, work_dir, params, on_step,
                          peft_config=_hf.lora_config(model, params))
    return _hf.run(trainer, work_dir, resume)


def train_fast(examples: list[dict], base_model_dir: Path, work_dir: Path, params: Any,
               on_step: StepCallback | None, resume: bool) -> TrainOutput:
    """The fast loop (finetune/_fast.py) on a CPU; TRL's trainer on a GPU."""
    import torch

    from agentcycle.finetune._fast import train_lora_fast

    if torch.cuda.is_available():
        return train_trl(examples, base_model_dir, work_dir, params, on_step, resume)
    out = train_lora_fast(examples, base_model_dir, params, work_dir=work_dir, resume=resume,
                          save_steps=params.save_steps, on_step=on_step)
    return TrainOutput(model=out.model, tokenizer=out.tokenizer, losses=out.losses,
                       steps=out.steps, tokens=out.tokens, resumed_from=out.resumed_from)


METHODS = {"lora": train_fast, "lora-trl": train_trl}
