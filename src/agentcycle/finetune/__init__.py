"""Fine-tune phase: LoRA SFT on the bundled (or any HF) model, merged for serving."""

from agentcycle.finetune.data import read_jsonl, to_examples
from agentcycle.finetune.k8s import FinetuneJob, finetune_job_manifest
from agentcycle.finetune.registry import (
    ModelVersion,
    promote,
    register_model,
    resolve_model_uri,
)
from agentcycle.finetune.train import (
    DiskFullError,
    FinetuneResult,
    LoraParams,
    TrainParams,
    finetune,
)

__all__ = ["DiskFullError", "FinetuneResult", "LoraParams", "TrainParams", "finetune",
           "read_jsonl", "to_examples",
           "FinetuneJob", "ModelVersion", "finetune_job_manifest", "promote", "register_model",
           "resolve_model_uri"]
