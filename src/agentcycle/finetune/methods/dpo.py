"""DPO: preference tuning with TRL's DPOTrainer and a LoRA adapter.

Records are TRL's conversational preference format::

    {"prompt": [messages], "chosen": [assistant message], "rejected": [assistant message]}

(``chosen``/``rejected`` may also be plain strings). With a LoRA adapter the reference
model is the base itself with the adapter switched off: no second copy in memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentcycle.errors import DataError
from agentcycle.finetune.methods import StepCallback, TrainOutput, _hf

_ROLES = {"system", "user", "assistant", "tool"}


def to_preferences(records: list[dict[str, Any]], path: str | Path = "data") -> list[dict]:
    """Validated preference pairs; every error names the file and line."""
    pairs = []
    for record in records:
        where = f"{path}:{record.get('_line', '?')}"
        missing = [k for k in ("prompt", "chosen", "rejected") if k not in record]
        if missing:
            raise DataError(f"{where}: a preference pair needs 'prompt', 'chosen' and "
                            f"'rejected' (missing {', '.join(missing)})")
        prompt = _messages(record["prompt"], where, "prompt")
        chosen = _answer(record["chosen"], where, "chosen")
        rejected = _answer(record["rejected"], where, "rejected")
        if _text(chosen) == _text(rejected):
            raise DataError(f"{where}: 'chosen' and 'rejected' are the same answer; a pair "
                            "must prefer one answer over a different one")
        pairs.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return pairs


def _messages(value: Any, where: str, key: str) -> list[dict[str, str]]:
    if isinstance(value, str) and value.strip():
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: '{key}' must be a non-empty list of messages")
    for i, message in enumerate(value):
        if not isinstance(message, dict) or message.get("role") not in _ROLES \
                or not isinstance(message.get("content"), str):
            raise DataError(f"{where}: {key}[{i}] needs a role and a string content")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _answer(value: Any, where: str, key: str) -> list[dict[str, str]]:
    messages = _messages(value, where, key)
    if isinstance(value, str):
        messages = [{"role": "assistant", "content": value}]
    if messages[-1]["role"] != "assistant" or not messages[-1]["content"].strip():
        raise DataError(f"{where}: '{key}' must end with a non-empty assistant message")
    return messages


def _text(messages: list[dict[str, str]]) -> str:
    return "\n".join(m["content"].strip() for m in messages)


def train(examples: list[dict], base_model_dir: Path, work_dir: Path, params: Any,
          on_step: StepCallback | None, resume: bool) -> TrainOutput:
    import datasets
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    torch.manual_seed(params.seed)
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
    config = DPOConfig(**_hf.trainer_args(params, work_dir), max_length=params.max_length,
                       beta=params.beta)
    datasets.disable_progress_bars()
    trainer = DPOTrainer(model=model, args=config, train_dataset=Dataset.from_list(examples),
                         processing_class=tokenizer, peft_config=_hf.lora_config(model, params),
                         callbacks=[_hf.progress_callback(on_step)])
    return _hf.run(trainer, work_dir, resume)


METHODS = {"dpo": train}
