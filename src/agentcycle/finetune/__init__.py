"""Fine-tune phase: LoRA (fast CPU loop or TRL), QLoRA, full, DPO and Unsloth behind one
``finetune()``, merged for serving; GGUF export; the MLflow model registry; a Kubernetes
Job for a GPU node. Dataset preparation lives in :mod:`agentcycle.finetune.dataprep`."""

from agentcycle.finetune.data import read_jsonl, to_examples
from agentcycle.finetune.export import ExportResult, export_gguf
from agentcycle.finetune.k8s import FinetuneJob, finetune_job_manifest
from agentcycle.finetune.registry import (
    ModelVersion,
    promote,
    register_model,
    resolve_model_uri,
)
from agentcycle.finetune.tokenize import TokenizedExample, tokenize_example
from agentcycle.finetune.train import (
    DiskFullError,
    FinetuneResult,
    LoraParams,
    TrainParams,
    finetune,
)

__all__ = ["DiskFullError", "ExportResult", "FinetuneJob", "FinetuneResult", "LoraParams",
           "ModelVersion", "TokenizedExample", "TrainParams", "export_gguf", "finetune",
           "finetune_job_manifest", "promote", "read_jsonl", "register_model",
           "resolve_model_uri", "to_examples", "tokenize_example"]
