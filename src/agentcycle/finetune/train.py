"""Fine-tuning: pick a method, train, merge, and publish the model only when it is whole.

The methods (LoRA, QLoRA, full, DPO, Unsloth) live in :mod:`agentcycle.finetune.methods`;
this module does what is the same for all of them. Training runs in ``OUT.partial/``
beside the output: checkpoints land there every ``save_steps`` and survive a kill, so
``resume=True`` continues from the last one. The model is assembled there too and
renamed to ``OUT`` as the last step: nothing appears at ``OUT`` until it is complete.
The output is a plain Hugging Face directory (base weights with the adapter merged in)
that every engine serves as is, the adapter kept beside it in ``adapter/``; every
parameter, the loss curve and the adapter go to MLflow.
"""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agentcycle.errors import AgentcycleError, ConfigError, DataError
from agentcycle.finetune.methods import StepCallback, TrainOutput, check_method, get_method
from agentcycle.settings import Settings

_MANIFEST = "run.json"
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class DiskFullError(AgentcycleError):
    """The disk filled up while writing checkpoints or the model."""


@dataclass
class TrainParams:
    """The recipe; the LoRA fields are ignored by ``full``, ``beta`` is DPO's."""

    epochs: float = 3.0
    learning_rate: float = 1e-3  # full/dpo want far less: methods.default_learning_rate
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
    save_steps: int = 50  # a checkpoint every N steps (0: none, nothing to resume)
    beta: float = 0.1  # DPO: how far the tuned model may drift from the reference

    def check(self) -> None:
        if self.epochs <= 0 and self.max_steps <= 0:
            raise ConfigError("epochs or max-steps must be positive")
        if not 0 < self.learning_rate < 1:
            raise ConfigError(f"learning rate {self.learning_rate} is out of range (0, 1)")
        if self.rank < 1:
            raise ConfigError(f"LoRA rank must be >= 1 (got {self.rank})")
        if self.save_steps < 0:
            raise ConfigError(f"save steps must be >= 0 (got {self.save_steps})")


LoraParams = TrainParams  # the name callers used before there were other methods


@dataclass
class FinetuneResult:
    model_dir: Path
    adapter_dir: Path | None  # None for full fine-tuning
    run_id: str
    steps: int
    final_loss: float | None
    seconds: float
    examples: int
    losses: list[tuple[int, float]]
    method: str = "lora"
    tokens: int = 0
    resumed_from: int = 0
    mlflow_pending: Path | None = None  # MLflow was down: the run waits here to publish


def finetune(examples: list[dict], out_dir: str | Path, base_model_dir: str | Path,
             settings: Settings | None = None, params: TrainParams | None = None, *,
             method: str = "lora", resume: bool = False, overwrite: bool = False,
             on_step: StepCallback | None = None, run_name: str = "finetune") -> FinetuneResult:
    """Train ``examples`` with ``method`` and write the merged model to ``out_dir``.

    Nothing appears at ``out_dir`` until training and merging have succeeded. With MLflow
    down the run still finishes: its params, metrics and artifacts wait in the outbox
    (``mlflow_pending``) for ``agentcycle publish``.
    """
    settings = settings or Settings()
    params = params or TrainParams()
    params.check()
    check_method(method)
    out, base = Path(out_dir), Path(base_model_dir)
    if not examples:
        raise DataError("no training examples")
    check_output_dir(out, overwrite)
    work = work_dir_for(out)
    old = check_work_dir(out, method, base, params, examples, resume, overwrite)
    manifest = _open_work_dir(work, _identity(method, base, params, examples), old)
    started = time.perf_counter()
    try:
        with _mlflow_run(manifest, work, run_name, settings) as (run, fresh):
            if fresh:
                _log_params(run, params, method, base, examples)
            trained = get_method(method)(examples, base, work, params,
                                         _logging(run, on_step), resume)
            _write_model(trained, base, work)
            _log_results(run, work, trained, examples, method)
            run.set_tags({"agentcycle.model_dir": str(out.resolve())})
        run_id = run.finish()
        if out.exists():
            shutil.rmtree(out)
        (work / "model").rename(out)
    except BaseException:
        _clean_after_failure(work)
        raise
    shutil.rmtree(work, ignore_errors=True)
    adapter = out / "adapter"
    return FinetuneResult(
        model_dir=out.resolve(), adapter_dir=adapter.resolve() if adapter.is_dir() else None,
        run_id=run_id or run.run_id or "", steps=trained.steps,
        final_loss=trained.losses[-1][1] if trained.losses else None,
        seconds=time.perf_counter() - started, examples=len(examples), losses=trained.losses,
        method=method, tokens=trained.tokens, resumed_from=trained.resumed_from,
        mlflow_pending=None if run_id else run.folder)


def check_output_dir(out: Path, overwrite: bool) -> None:
    """Never train for minutes only to refuse (or clobber) the output at the end."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a directory")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{out} already exists and is not empty (pass --overwrite to replace it)")


def work_dir_for(out: str | Path) -> Path:
    """Where a run's checkpoints live until it succeeds: ``OUT.partial`` beside ``OUT``."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


def _identity(method: str, base: Path, params: TrainParams, examples: list[dict]) -> dict:
    """What a resumed run must share with the interrupted one to continue it."""
    recipe = {k: v for k, v in asdict(params).items() if k != "save_steps"}
    data = hashlib.sha256(json.dumps(examples, sort_keys=True).encode()).hexdigest()[:16]
    return {"method": method, "base_model": str(base.resolve()), "params": recipe, "data": data}


def _has_checkpoint(work: Path) -> bool:
    """A file a resume could use (trainers create empty checkpoint folders up front)."""
    if not work.is_dir():
        return False
    kept = [p for p in work.iterdir()
            if p.name not in (_MANIFEST, "model", "adapter", "train.jsonl")]
    return any(p.is_file() or any(f.is_file() for f in p.rglob("*")) for p in kept)


def check_work_dir(out: Path, method: str, base: Path, params: TrainParams,
                   examples: list[dict], resume: bool, overwrite: bool) -> dict | None:
    """Refuse an unmatched resume, or a rerun that would drop an interrupted run's
    checkpoints, before anything loads; the manifest to resume with, if any."""
    work = work_dir_for(out)
    identity = _identity(method, base, params, examples)
    file = work / _MANIFEST
    old = json.loads(file.read_text()) if file.is_file() else None
    if resume and old:
        changed = [k for k in identity if old.get(k) != identity[k]]
        if changed:
            what = "; ".join(_difference(k, old.get(k), identity[k]) for k in changed)
            raise ConfigError(f"cannot resume from {work}: {what}. Resume with the same "
                              "settings, or start over with --overwrite")
        return old
    if _has_checkpoint(work) and not resume and not overwrite:
        raise ConfigError(f"{work} holds the checkpoints of an interrupted run: pass --resume "
                          "to continue it, or --overwrite to start over")
    return None


def _open_work_dir(work: Path, identity: dict, old: dict | None) -> dict:
    """The run's manifest: the interrupted run's when resuming, else a fresh work dir."""
    if old:
        return old
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / _MANIFEST).write_text(json.dumps(identity, indent=1))
    return identity


def _difference(key: str, old: Any, new: Any) -> str:
    if key == "params":
        keys = [k for k in new if (old or {}).get(k) != new[k]]
        return ", ".join(f"{k} was {(old or {}).get(k)!r}, now {new[k]!r}" for k in keys)
    if key == "data":
        return "the training data differs"
    return f"the {key.replace('_', ' ')} was {old!r}, now {new!r}"


class _mlflow_run:
    """The run of the interrupted attempt when resuming, so its loss curve continues;
    journaled in the outbox, so a down MLflow loses nothing (observe.outbox)."""

    def __init__(self, manifest: dict, work: Path, run_name: str, settings: Settings):
        self.manifest, self.work, self.run_name = manifest, work, run_name
        self.settings = settings

    def __enter__(self):
        from agentcycle.observe.outbox import RunRecorder

        fresh = "outbox_id" not in self.manifest and "mlflow_run_id" not in self.manifest
        self.run = RunRecorder.start(self.settings, self.run_name,
                                     run_id=self.manifest.get("mlflow_run_id"),
                                     entry_id=self.manifest.get("outbox_id"),
                                     origin=f"fine-tune {self.work.name.removesuffix('.partial')}")
        self.run.set_tags({"agentcycle.phase": "finetune"})
        self.manifest["mlflow_run_id"] = self.run.run_id
        self.manifest["outbox_id"] = self.run.folder.name
        (self.work / _MANIFEST).write_text(json.dumps(self.manifest, indent=1))
        return self.run, fresh

    def __exit__(self, kind, error, trace):
        if kind is not None:  # the journal stays for the resume (or for publish)
            self.run.finish("FAILED")
        return False


def _log_params(run: Any, params: TrainParams, method: str, base: Path,
                examples: list[dict]) -> None:
    values = {k: v for k, v in asdict(params).items() if k not in ("target_modules",
                                                                    "save_steps")}
    run.log_params({**values, "target_modules": ",".join(params.target_modules),
                    "method": method, "base_model": str(base), "examples": len(examples)})


def _logging(run: Any, on_step: StepCallback | None) -> StepCallback:
    def step(done: int, total: int, loss: float | None) -> None:
        if loss is not None:
            run.log_metric("train_loss", loss, step=done)
        if on_step:
            on_step(done, total, loss)

    return step


def _write_model(trained: TrainOutput, base: Path, work: Path) -> None:
    """The merged model in ``work/model`` (adapter in ``model/adapter``); a full disk is
    one clear error and leaves no half-written model behind."""
    try:
        model = trained.model
        if hasattr(model, "merge_and_unload"):  # a PEFT adapter
            model.save_pretrained(work / "adapter")
            model = _merged(model, base, work / "adapter")
        model.save_pretrained(work / "model")
        trained.tokenizer.save_pretrained(work / "model")
        if (work / "adapter").is_dir():
            shutil.move(str(work / "adapter"), work / "model" / "adapter")
    except Exception as exc:  # OSError, torch's RuntimeError, safetensors' own error
        if _disk_full(exc, work):
            free = shutil.disk_usage(work).free / 2**20
            raise DiskFullError(f"no space left on the disk of {work.parent} while writing the "
                                f"model ({free:.0f} MiB free): free some space and rerun with "
                                "--resume") from None
        raise


def _merged(model: Any, base: Path, adapter_dir: Path) -> Any:
    """Merge into full-precision weights: a 4-bit (QLoRA) base is reloaded unquantized, or
    the quantization error would be baked into the served model."""
    base_model = model.get_base_model()
    if not getattr(base_model, "is_quantized", False):
        return model.merge_and_unload()
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    del model, base_model
    full = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    return PeftModel.from_pretrained(full, adapter_dir).merge_and_unload()


def _disk_full(exc: BaseException, work: Path) -> bool:
    """ENOSPC arrives as an OSError from Python, a RuntimeError from torch.save and a
    SafetensorError ("No space left on device (os error 28)") from safetensors."""
    chain: BaseException | None = exc
    while chain is not None:
        if isinstance(chain, OSError) and chain.errno in _DISK_FULL:
            return True
        if "No space left on device" in str(chain):
            return True
        chain = chain.__cause__ or chain.__context__
    try:
        return shutil.disk_usage(work).free < 2**20
    except OSError:
        return False


def _clean_after_failure(work: Path) -> None:
    """Drop any half-written model; keep the checkpoints a resume can continue from."""
    for name in ("model", "adapter"):
        shutil.rmtree(work / name, ignore_errors=True)
    if not _has_checkpoint(work):
        shutil.rmtree(work, ignore_errors=True)


def _log_results(run: Any, work: Path, trained: TrainOutput, examples: list[dict],
                 method: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = trained.losses
    figure, axis = plt.subplots(figsize=(6, 3.5))
    if losses:
        axis.plot([s for s, _ in losses], [v for _, v in losses], marker=".")
    axis.set_xlabel("step")
    axis.set_ylabel("training loss")
    axis.set_title(f"{method} training loss")
    figure.tight_layout()
    run.log_figure(figure, "loss_curve.png")
    plt.close(figure)
    with open(work / "train.jsonl", "w", encoding="utf-8") as handle:
        for example in examples:
            handle.write(json.dumps(example, ensure_ascii=False) + "\n")
    run.log_artifact(work / "train.jsonl", "data")
    if (work / "model" / "adapter").is_dir():
        run.log_artifact(work / "model" / "adapter", "adapter")
    run.log_metrics({"steps": trained.steps, "tokens": trained.tokens,
                        "final_train_loss": losses[-1][1] if losses else 0.0, **trained.extra})
