"""LoRA supervised fine-tuning with PEFT + TRL, logged to MLflow, merged for serving.

The output is a plain Hugging Face directory (base weights with the adapter merged
in) that every engine serves as is; the adapter itself is kept beside it in
``adapter/`` and logged to MLflow with every parameter and the loss curve.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from agentcycle._hardware import native_bf16
from agentcycle.errors import ConfigError, DataError
from agentcycle.finetune.data import Example
from agentcycle.settings import Settings

StepCallback = Callable[[int, int, float | None], None]


@dataclass
class LoraParams:
    epochs: float = 3.0
    learning_rate: float = 1e-3
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.0
    batch_size: int = 4
    max_steps: int = -1
    max_length: int = 512
    seed: int = 7
    # LoRA on the top layers only: backward then stops there, which on a CPU halves
    # the step time for little loss in what a small domain adapter can learn.
    top_layers: int | None = 12
    bf16: bool | None = None  # None: when the CPU/GPU has native bf16 support
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj",
                                 "gate_proj", "up_proj", "down_proj"])

    def check(self) -> None:
        if self.epochs <= 0 and self.max_steps <= 0:
            raise ConfigError("epochs or max-steps must be positive")
        if not 0 < self.learning_rate < 1:
            raise ConfigError(f"learning rate {self.learning_rate} is out of range (0, 1)")
        if self.rank < 1:
            raise ConfigError(f"LoRA rank must be >= 1 (got {self.rank})")


@dataclass
class FinetuneResult:
    model_dir: Path
    adapter_dir: Path
    run_id: str
    steps: int
    final_loss: float | None
    seconds: float
    examples: int
    losses: list[tuple[int, float]]


def finetune(examples: list[Example], out_dir: str | Path, base_model_dir: str | Path,
             settings: Settings | None = None, params: LoraParams | None = None, *,
             overwrite: bool = False, on_step: StepCallback | None = None,
             run_name: str = "finetune") -> FinetuneResult:
    """Train a LoRA adapter on ``examples`` and write the merged model to ``out_dir``.

    Nothing appears at ``out_dir`` until training and merging have succeeded.
    """
    import mlflow

    from agentcycle.observe.tracing import setup_tracking

    settings = settings or Settings()
    params = params or LoraParams()
    params.check()
    out = Path(out_dir)
    if not examples:
        raise DataError("no training examples")
    check_output_dir(out, overwrite)
    setup_tracking(settings)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    started = time.perf_counter()
    try:
        with mlflow.start_run(run_name=run_name) as run:
            mlflow.log_params({**{k: v for k, v in asdict(params).items() if k != "target_modules"},
                               "target_modules": ",".join(params.target_modules),
                               "base_model": str(base_model_dir), "examples": len(examples)})
            mlflow.set_tag("agentcycle.phase", "finetune")
            trainer, losses = _train(examples, base_model_dir, work, params, on_step)
            adapter_dir = work / "adapter"
            trainer.model.save_pretrained(adapter_dir)
            _merge_and_save(trainer, work / "model")
            shutil.move(str(adapter_dir), work / "model" / "adapter")
            final_loss = losses[-1][1] if losses else None
            _log_results(work, losses, examples, trainer.state.global_step)
            mlflow.set_tag("agentcycle.model_dir", str(out.resolve()))
            run_id = run.info.run_id
        if out.exists():
            shutil.rmtree(out)
        (work / "model").rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return FinetuneResult(model_dir=out.resolve(), adapter_dir=(out / "adapter").resolve(),
                          run_id=run_id, steps=trainer.state.global_step, final_loss=final_loss,
                          seconds=time.perf_counter() - started, examples=len(examples),
                          losses=losses)


def check_output_dir(out: Path, overwrite: bool) -> None:
    """Never train for minutes only to refuse (or clobber) the output at the end."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a directory")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{out} already exists and is not empty (pass --overwrite to replace it)")


def _train(examples, base_model_dir, work: Path, params: LoraParams, on_step):
    import datasets
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    torch.manual_seed(params.seed)
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
    losses: list[tuple[int, float]] = []

    class Progress(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                losses.append((state.global_step, float(logs["loss"])))
                import mlflow

                mlflow.log_metric("train_loss", float(logs["loss"]), step=state.global_step)

        def on_step_end(self, args, state, control, **kwargs):
            if on_step:
                on_step(state.global_step, state.max_steps, losses[-1][1] if losses else None)

    config = SFTConfig(
        output_dir=str(work / "checkpoints"),
        num_train_epochs=params.epochs,
        max_steps=params.max_steps,
        learning_rate=params.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=2,
        per_device_train_batch_size=params.batch_size,
        max_length=params.max_length,
        completion_only_loss=True,  # learn the answer, not to repeat the context
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=params.seed,
        use_cpu=not torch.cuda.is_available(),
        bf16=native_bf16() if params.bf16 is None else params.bf16,
        dataloader_num_workers=0,
        gradient_checkpointing=False,  # TRL turns it on; on a 135M model it only costs time
    )
    layers = model.config.num_hidden_layers
    top = min(params.top_layers or layers, layers)
    lora = LoraConfig(r=params.rank, lora_alpha=params.alpha, lora_dropout=params.dropout,
                      target_modules=params.target_modules, task_type="CAUSAL_LM",
                      layers_to_transform=list(range(layers - top, layers)))
    datasets.disable_progress_bars()
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(examples),
                         processing_class=tokenizer, peft_config=lora, callbacks=[Progress()])
    trainer.remove_callback(PrinterCallback)  # our callback reports progress instead
    trainer.train()
    return trainer, losses


def _merge_and_save(trainer, target: Path) -> None:
    merged = trainer.model.merge_and_unload()
    merged.save_pretrained(target)
    trainer.processing_class.save_pretrained(target)


def _log_results(work: Path, losses, examples, steps: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    figure, axis = plt.subplots(figsize=(6, 3.5))
    if losses:
        axis.plot([s for s, _ in losses], [v for _, v in losses], marker=".")
    axis.set_xlabel("step")
    axis.set_ylabel("training loss")
    axis.set_title("LoRA SFT loss")
    figure.tight_layout()
    mlflow.log_figure(figure, "loss_curve.png")
    plt.close(figure)
    with open(work / "train.jsonl", "w", encoding="utf-8") as handle:
        for example in examples:
            handle.write(json.dumps(example, ensure_ascii=False) + "\n")
    mlflow.log_artifact(str(work / "train.jsonl"), "data")
    mlflow.log_artifacts(str(work / "model" / "adapter"), "adapter")
    mlflow.log_metrics({"steps": steps, "final_train_loss": losses[-1][1] if losses else 0.0})
