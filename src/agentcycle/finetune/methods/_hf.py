"""What the TRL-based methods share: trainer arguments, checkpoints, resume, progress."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from agentcycle.finetune.methods import StepCallback, TrainOutput

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def trainer_args(params: Any, work_dir: Path) -> dict[str, Any]:
    """Keyword arguments every TRL config (SFTConfig, DPOConfig) takes the same way."""
    import torch

    from agentcycle._hardware import native_bf16

    return dict(
        output_dir=str(work_dir / "checkpoints"),
        num_train_epochs=params.epochs,
        max_steps=params.max_steps,
        learning_rate=params.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=2,
        per_device_train_batch_size=params.batch_size,
        logging_steps=1,
        # Checkpoints every save_steps; two kept, so a kill in the middle of writing the
        # newest one still leaves a whole one to resume from.
        save_strategy="steps" if params.save_steps > 0 else "no",
        save_steps=max(params.save_steps, 1),
        save_total_limit=2,
        report_to="none",
        disable_tqdm=True,
        seed=params.seed,
        data_seed=params.seed,
        use_cpu=not torch.cuda.is_available(),
        bf16=native_bf16() if params.bf16 is None else params.bf16,
        dataloader_num_workers=0,
        gradient_checkpointing=False,  # TRL turns it on; on a 135M model it only costs time
        include_num_input_tokens_seen="non_padding",
    )


def lora_config(model: Any, params: Any):
    """LoRA on the top ``params.top_layers`` layers (all when None)."""
    from peft import LoraConfig

    layers = model.config.num_hidden_layers
    top = min(params.top_layers or layers, layers)
    return LoraConfig(r=params.rank, lora_alpha=params.alpha, lora_dropout=params.dropout,
                      target_modules=list(params.target_modules), task_type="CAUSAL_LM",
                      layers_to_transform=list(range(layers - top, layers)))


def last_checkpoint(work_dir: Path) -> Path | None:
    """The newest complete checkpoint (trainer_state.json is the last file written)."""
    folder = work_dir / "checkpoints"
    if not folder.is_dir():
        return None
    done = [(int(m.group(1)), p) for p in folder.iterdir()
            if (m := _CHECKPOINT.match(p.name)) and (p / "trainer_state.json").is_file()]
    return max(done)[1] if done else None


def progress_callback(on_step: StepCallback | None):
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        # on_log, not on_step_end: the trainer logs a step's loss after its step_end.
        def on_log(self, args, state, control, logs=None, **kwargs):
            if on_step and logs and "loss" in logs:
                on_step(state.global_step, state.max_steps, float(logs["loss"]))

    return Progress()


def run(trainer: Any, work_dir: Path, resume: bool) -> TrainOutput:
    """Train (from the last checkpoint when resuming) and collect what finetune needs."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # our callback reports progress instead
    checkpoint = last_checkpoint(work_dir) if resume else None
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    state = trainer.state
    # A resumed trainer's log history starts with the steps before the kill.
    losses = [(int(e["step"]), float(e["loss"])) for e in state.log_history if "loss" in e]
    return TrainOutput(model=trainer.model, tokenizer=trainer.processing_class, losses=losses,
                       steps=state.global_step, tokens=int(state.num_input_tokens_seen or 0),
                       resumed_from=int(checkpoint.name.split("-")[1]) if checkpoint else 0)
