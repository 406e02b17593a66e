"""Full fine-tuning: every weight trains, no adapter. For small models only.

Adam in fp32 holds weights, gradients and two moments: ~16 bytes per parameter
(2.2 GB for the bundled 135M model). We refuse up front when that does not fit,
rather than let the machine swap or the OOM killer end the run an hour in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentcycle.errors import ConfigError
from agentcycle.finetune.methods import StepCallback, TrainOutput, _hf
from agentcycle.finetune.methods.lora import sft_trainer

BYTES_PER_PARAMETER = 16


def check_memory(parameters: int, free_bytes: int) -> None:
    need = parameters * BYTES_PER_PARAMETER
    if need > free_bytes:
        raise ConfigError(
            f"full fine-tuning of a {parameters / 1e6:.0f}M-parameter model needs about "
            f"{need / 2**30:.1f} GiB (weights, gradients, Adam state) and "
            f"{free_bytes / 2**30:.1f} GiB is free: use --method lora or qlora")


def _free_bytes() -> int:
    import os

    import torch

    if torch.cuda.is_available():
        return torch.cuda.mem_get_info()[0]
    try:  # MemAvailable counts the page cache the kernel would give back
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def train(examples: list[dict], base_model_dir: Path, work_dir: Path, params: Any,
          on_step: StepCallback | None, resume: bool) -> TrainOutput:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(params.seed)
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
    # The loaded weights are already in memory: what is left must hold the other 12 bytes.
    parameters = sum(p.numel() for p in model.parameters())
    check_memory(parameters, _free_bytes() + 4 * parameters)
    trainer = sft_trainer(model, tokenizer, examples, work_dir, params, on_step)
    return _hf.run(trainer, work_dir, resume)


METHODS = {"full": train}
