"""QLoRA: LoRA SFT on a base quantized to 4 bits (bitsandbytes NF4).

bitsandbytes >= 0.48 has CPU kernels for 4-bit, so this runs (and is tested) on a
CPU. The adapter trains against the 4-bit weights; finetune merges it into the
full-precision base (the usual QLoRA recipe: merging into 4-bit weights would bake
the quantization error into the served model).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from agentcycle.errors import ConfigError, MissingDependency
from agentcycle.finetune.methods import StepCallback, TrainOutput, _hf
from agentcycle.finetune.methods.lora import sft_trainer


def check_available() -> None:
    if importlib.util.find_spec("bitsandbytes") is None:
        raise MissingDependency("bitsandbytes", "QLoRA (4-bit) fine-tuning")
    import bitsandbytes

    major, minor = (int(x) for x in bitsandbytes.__version__.split(".")[:2])
    if (major, minor) < (0, 48):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"bitsandbytes {bitsandbytes.__version__} has no CPU 4-bit "
                              "kernels and no CUDA GPU was found: pip install "
                              "'bitsandbytes>=0.48' to run QLoRA on a CPU")


def train(examples: list[dict], base_model_dir: Path, work_dir: Path, params: Any,
          on_step: StepCallback | None, resume: bool) -> TrainOutput:
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    check_available()
    torch.manual_seed(params.seed)
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                               bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16 if params.bf16
                               else torch.float32)
    device = "auto" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(base_model_dir, quantization_config=quant,
                                                 device_map=device, dtype=torch.float32)
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    trainer = sft_trainer(model, tokenizer, examples, work_dir, params, on_step,
                          peft_config=_hf.lora_config(model, params))
    return _hf.run(trainer, work_dir, resume)


METHODS = {"qlora": train}
