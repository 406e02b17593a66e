# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · QLoRA tuning
#
# QLoRA trains a LoRA adapter on top of a base model whose weights are stored in 4 bits:
# a 7B model then fits in ~5 GB of GPU memory instead of ~14 GB (LoRA) or ~100 GB (full
# fine-tuning). This notebook builds the QLoRA recipe piece by piece with the libraries
# that implement it (bitsandbytes, PEFT, TRL):
#
# 1. `BitsAndBytesConfig` with NF4 and double quantisation, and what it does to a weight;
# 2. `prepare_model_for_kbit_training`, then LoRA: rank, alpha, target modules, dropout;
# 3. the dataset: chat template, padding, truncation;
# 4. the training configuration: paged AdamW (on a GPU), gradient accumulation;
# 5. training with loss, memory, tokens/s and checkpoints;
# 6. testing during training: a callback that answers a question at each evaluation;
# 7. saving the adapter alone and reloading it with `PeftModel.from_pretrained`;
# 8. merging the adapter, and the sizes of what is saved;
# 9. memory of full fine-tuning, LoRA and QLoRA, measured and computed for 7B;
# 10. troubleshooting: common errors and their fixes, one caught live.
#
# **AI Lab image:** the fine-tuning image (a CUDA GPU for the paged optimizer and the
# real memory savings); any Python 3.11+ kernel with `pip install "agentcycle[notebooks]"`
# runs it on a CPU, since bitsandbytes >= 0.48 has CPU 4-bit kernels.
# **Prerequisites:** notebook 01 explains LoRA and the label mask. The base model is the
# bundled SmolLM2-135M-Instruct; the data is agentcycle's legal example. Nothing is
# downloaded. `agentcycle finetune DATA --method qlora` runs the same recipe in one command.

# %% tags=["parameters"]
from agentcycle import lab

N_FACTS = lab.sized(ci=2, full=40)  # facts of the Act to teach (each has 6 wordings)
WORDINGS = lab.sized(ci=2, full=6)
MAX_LENGTH = lab.sized(ci=128, full=512)  # the legal prompts are 65-111 tokens
MAX_STEPS = lab.sized(ci=4, full=-1)  # -1: train for EPOCHS
EPOCHS = lab.sized(ci=1.0, full=3.0)
MICRO_BATCH = lab.sized(ci=1, full=4)
ACCUMULATION = 2  # effective batch = MICRO_BATCH x ACCUMULATION
SAVE_STEPS = lab.sized(ci=2, full=50)
EVAL_STEPS = lab.sized(ci=2, full=25)
TOP_LAYERS = lab.sized(ci=2, full=30)  # LoRA on the top N decoder layers (30: all)
MEMORY_STEPS = lab.sized(ci=1, full=3)  # steps per run of the memory comparison
ANSWER_TOKENS = lab.sized(ci=16, full=48)  # generated at each evaluation (4-bit on a CPU: slow)
RANK, ALPHA, DROPOUT = 16, 32, 0.05
LEARNING_RATE = 1e-3

# %%
import contextlib
import gc
import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # bundled models only: never the Hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import datasets
import matplotlib.pyplot as plt
import psutil
import torch
from transformers.utils import logging as hf_logging

from agentcycle import Settings
from agentcycle.models import chat_model_dir

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()
datasets.disable_progress_bars()

settings = Settings()
lab.show_services(settings)
BASE_DIR = chat_model_dir(settings)
WORK = settings.ensure_home().resolve() / "lab" / "fine-tuning-02"
WORK.mkdir(parents=True, exist_ok=True)
HAS_CUDA = torch.cuda.is_available()
print("base model:", BASE_DIR)
print("outputs:   ", WORK)
print("device:    ", torch.cuda.get_device_name(0) if HAS_CUDA else "CPU (no CUDA GPU)")

# %% [markdown]
# ## 1. `BitsAndBytesConfig`: NF4 and double quantisation
#
# - `load_in_4bit` stores each linear layer's weights in 4 bits, in blocks of 64 with one
#   scale (absmax) per block;
# - `nf4` ("4-bit NormalFloat") puts its 16 levels at the quantiles of a normal
#   distribution, which is how trained weights are spread: less error than even steps;
# - `bnb_4bit_use_double_quant` quantises the scales too (8 bits), saving ~0.4 bits per
#   weight;
# - `bnb_4bit_compute_dtype` is what each layer dequantises to for its matmul: bf16 on a
#   GPU; float32 on a CPU (agentcycle's `qlora` method makes the same choice).
#
# agentcycle's `qlora` method checks bitsandbytes first: before 0.48 it had no CPU
# kernels, and the method says so instead of failing deep inside a forward pass.

# %%
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

from agentcycle.finetune.methods.qlora import check_available

check_available()  # raises a clear error when bitsandbytes cannot run 4-bit here
print(f"bitsandbytes {importlib.metadata.version('bitsandbytes')}: 4-bit kernels available "
      f"on {'CUDA' if HAS_CUDA else 'this CPU'}")

COMPUTE_DTYPE = torch.bfloat16 if HAS_CUDA else torch.float32
bnb_config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype=COMPUTE_DTYPE)
tokenizer = AutoTokenizer.from_pretrained(BASE_DIR)
started = time.perf_counter()
model = AutoModelForCausalLM.from_pretrained(
    BASE_DIR, quantization_config=bnb_config, dtype=torch.float32,
    device_map="auto" if HAS_CUDA else "cpu")
print(f"loaded in 4 bits in {time.perf_counter() - started:.1f} s")

kinds: dict[str, int] = {}
for module in model.modules():
    if not list(module.children()):  # leaves only
        kinds[type(module).__name__] = kinds.get(type(module).__name__, 0) + 1
print("modules:", ", ".join(f"{count} {name}" for name, count in sorted(kinds.items())))
fp32_bytes = (BASE_DIR / "model.safetensors").stat().st_size
print(f"weights: {model.get_memory_footprint() / 2**20:.0f} MiB in 4 bits, against "
      f"{fp32_bytes / 2**20:.0f} MiB in fp32")

# %%
import bitsandbytes.functional as bnb_functional
from safetensors import safe_open

name = "model.layers.0.self_attn.q_proj.weight"
quantized = model.get_submodule(name.removesuffix(".weight")).weight
restored = bnb_functional.dequantize_4bit(quantized.data, quantized.quant_state).float()
with safe_open(BASE_DIR / "model.safetensors", "pt") as weights:
    original = weights.get_tensor(name).float()
error = (restored - original).abs()
print(f"{name}: {tuple(original.shape)}")
print(f"  stored as {quantized.data.numel():,} bytes (2 weights a byte) "
      f"+ scales; fp32 took {original.numel() * 4:,}")
print(f"  mean |w| {original.abs().mean():.4f}; mean |error| {error.mean():.4f} "
      f"({100 * error.mean() / original.abs().mean():.1f}%); max {error.max():.4f}")
print("  the embedding, the norms and the output head stay unquantised:",
      type(model.get_input_embeddings()).__name__, model.get_input_embeddings().weight.dtype)

# %% [markdown]
# ## 2. `prepare_model_for_kbit_training` and the LoRA settings
#
# `prepare_model_for_kbit_training` freezes every base weight, casts the layers that stay
# unquantised (norms, embedding) to fp32 for stable training, and makes the input
# embeddings' output require gradients so backward reaches the adapters. With
# `use_gradient_checkpointing=True` (the GPU default) activations are recomputed in the
# backward pass instead of stored: less memory, ~30% more time. On a 135M model on a CPU
# it only costs time, so it is off here.
#
# | LoRA setting | here | what it changes |
# |---|---|---|
# | rank `r` | 16 | the adapter's capacity; 8-64 is usual (the QLoRA paper: 64) |
# | `lora_alpha` | 32 | scales the update by alpha / r: keep it at ~2r when r changes |
# | target modules | all 7 projections | attention only learns less; QLoRA targets all |
# | `lora_dropout` | 0.05 | regularises small data sets; 0 for speed on big ones |
# | layers | top `TOP_LAYERS` | fewer layers: faster, less capacity (agentcycle's CPU default) |

# %%
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=HAS_CUDA)
print("trainable after prepare:", sum(p.numel() for p in model.parameters() if p.requires_grad))
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LAYERS = model.config.num_hidden_layers
lora_config = LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=DROPOUT,
                         target_modules=TARGETS, task_type="CAUSAL_LM",
                         layers_to_transform=list(range(LAYERS - TOP_LAYERS, LAYERS)))
model = get_peft_model(model, lora_config)
model.print_trainable_parameters()

# %% [markdown]
# ## 3. The dataset: chat template, padding, truncation
#
# Records become prompt/completion conversations (`agentcycle.finetune.to_examples`),
# which TRL's `SFTTrainer` renders with the model's chat template, tokenises, truncates
# to `max_length` and pads per batch. No retriever is given here, so each prompt's
# passages are empty: the model must learn the facts themselves ("closed book").
# The held-out questions (the test split, same facts, other wordings) are the eval set.

# %%
from datasets import Dataset

from agentcycle.examples.legal import legal_split
from agentcycle.finetune import read_jsonl, to_examples

train_records = read_jsonl(legal_split("train"))
test_by_fact = {record["fact"]: record for record in read_jsonl(legal_split("test"))}
facts = [fact for fact in dict.fromkeys(r["fact"] for r in train_records)
         if fact in test_by_fact][:N_FACTS]
chosen = [r for fact in facts for r in [t for t in train_records if t["fact"] == fact][:WORDINGS]]
held_out = [test_by_fact[fact] for fact in facts]
train_data = Dataset.from_list(to_examples(chosen, "train.jsonl"))
eval_data = Dataset.from_list(to_examples(held_out, "test.jsonl"))
print(train_data)

texts = [tokenizer.apply_chat_template(e["prompt"] + e["completion"], tokenize=False)
         for e in train_data]
lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
print(f"tokens per example: min {min(lengths)}, mean {sum(lengths) / len(lengths):.0f}, "
      f"max {max(lengths)}; max_length {MAX_LENGTH}: "
      f"{sum(n > MAX_LENGTH for n in lengths)} would be cut")
print(f"pad token {tokenizer.pad_token!r} (id {tokenizer.pad_token_id}), "
      f"padding side {tokenizer.padding_side}")

# %%
short = tokenizer(texts[:3], padding="longest", truncation=True, max_length=MAX_LENGTH)
print("padding to the longest in the batch (1 = real token, 0 = padding):")
for ids, mask in zip(short["input_ids"], short["attention_mask"], strict=True):
    print(f"  {len(ids)} ids, {sum(mask)} real: ...{''.join(map(str, mask[-24:]))}")
cut = tokenizer(texts[0], truncation=True, max_length=lengths[0] - 12)["input_ids"]
print("\ntruncated 12 tokens short, the end of the example is now:")
print("  ..." + repr(tokenizer.decode(cut[-16:])))
print("the answer lost its end: truncation cuts from the right, i.e. the answer first")

# %% [markdown]
# ## 4. The training configuration
#
# - **Optimizer.** On a GPU, `paged_adamw_8bit`: Adam's two moments in 8 bits (a quarter
#   of fp32's memory) in *paged* memory, which CUDA's unified memory moves to CPU RAM
#   when a long batch spikes GPU memory, instead of an out-of-memory error. Paging is a
#   CUDA feature: on a CPU the state already lives in RAM, so `adamw_torch` it is. With
#   an adapter of ~1M parameters the optimizer state is small either way; on a 70B model
#   it is not.
# - **Accumulation.** `MICRO_BATCH` examples per forward pass, `ACCUMULATION` passes per
#   optimizer step: the effective batch of a bigger GPU, on a smaller one.
# - **Precision.** bf16 mixed precision where the hardware has it natively.
# - **Checkpoints** every `SAVE_STEPS` steps, the newest two kept; **evaluation** every
#   `EVAL_STEPS` steps on the held-out questions.

# %%
from trl import SFTConfig


def native_bf16() -> bool:
    if HAS_CUDA:
        return torch.cuda.is_bf16_supported()
    with contextlib.suppress(OSError):
        flags = Path("/proc/cpuinfo").read_text()
        return "avx512_bf16" in flags or "amx_bf16" in flags
    return False


OPTIMIZER = "paged_adamw_8bit" if HAS_CUDA else "adamw_torch"
sft_config = SFTConfig(
    output_dir=str(WORK / "checkpoints"), max_steps=MAX_STEPS, num_train_epochs=EPOCHS,
    per_device_train_batch_size=MICRO_BATCH, gradient_accumulation_steps=ACCUMULATION,
    per_device_eval_batch_size=2, learning_rate=LEARNING_RATE, lr_scheduler_type="cosine",
    warmup_steps=1, optim=OPTIMIZER, bf16=native_bf16(), max_length=MAX_LENGTH,
    completion_only_loss=True,  # the label mask: loss on the answer only
    logging_steps=1, save_strategy="steps", save_steps=SAVE_STEPS, save_total_limit=2,
    eval_strategy="steps", eval_steps=EVAL_STEPS, report_to="none", seed=7,
    use_cpu=not HAS_CUDA, gradient_checkpointing=HAS_CUDA, disable_tqdm=True,
    include_num_input_tokens_seen="non_padding")
for key in ("optim", "per_device_train_batch_size", "gradient_accumulation_steps",
            "learning_rate", "lr_scheduler_type", "bf16", "max_length", "save_steps",
            "eval_steps", "gradient_checkpointing"):
    print(f"{key:>28}: {getattr(sft_config, key)}")

# %% [markdown]
# ## 5 and 6. Train: loss, memory, tokens/s, checkpoints, and answers during training
#
# Two callbacks: one records each step's time, tokens seen and memory (the process's
# resident memory on a CPU, `torch.cuda.max_memory_allocated` on a GPU); the other
# answers a held-out question at each evaluation, so you see the model change while it
# trains rather than after. (On a CPU, each generated token dequantises every 4-bit
# layer: slow, so the CI profile cuts the answers to `ANSWER_TOKENS` tokens.)

# %%
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback
from trl import SFTTrainer

QUESTION = held_out[0]


def answer(model, record: dict, max_new_tokens: int = ANSWER_TOKENS) -> str:
    prompt = to_examples([record])[0]["prompt"]
    inputs = tokenizer.apply_chat_template(prompt, add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    inputs = inputs.to(model.device)
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                pad_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1]:],
                            skip_special_tokens=True).strip()


def memory_mib() -> float:
    if HAS_CUDA:
        return torch.cuda.max_memory_allocated() / 2**20
    return psutil.Process().memory_info().rss / 2**20


class StepMonitor(TrainerCallback):
    """Per optimizer step: when it ended, tokens seen so far, memory."""

    def __init__(self):
        self.rows: list[tuple[int, float, int, float]] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.rows.append((state.global_step, time.perf_counter(),
                          state.num_input_tokens_seen, memory_mib()))


class AnswerAtEval(TrainerCallback):
    """Generate an answer to one held-out question after each evaluation."""

    def __init__(self, record: dict):
        self.record, self.answers = record, []

    def on_evaluate(self, args, state, control, model=None, metrics=None, **kwargs):
        was_training = model.training
        model.eval()
        text = answer(model, self.record)
        model.train(was_training)
        self.answers.append((state.global_step, metrics.get("eval_loss"), text))
        print(f"step {state.global_step}: eval loss {metrics.get('eval_loss'):.3f}; "
              f"answer: {text[:90]}")


print("question:", QUESTION["question"])
print("expected:", QUESTION["answer"])
monitor, answers = StepMonitor(), AnswerAtEval(QUESTION)
trainer = SFTTrainer(model=model, args=sft_config, train_dataset=train_data,
                     eval_dataset=eval_data, processing_class=tokenizer,
                     callbacks=[monitor, answers])
trainer.remove_callback(PrinterCallback)  # our callbacks report; no raw log dicts

# %%
batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
print("one collated batch of 2:")
for key, value in batch.items():
    print(f"  {key:>15}: {tuple(value.shape)}")
labels = batch["labels"][0]
print(f"  example 1: {int((labels != -100).sum())} labelled tokens of "
      f"{int(batch['attention_mask'][0].sum())} real ones (the prompt and the padding "
      "are -100)")

# %%
train_started = time.perf_counter()
train_output = trainer.train()
print(f"\n{trainer.state.global_step} steps in {time.perf_counter() - train_started:.0f} s, "
      f"train loss {train_output.training_loss:.3f}, "
      f"{trainer.state.num_input_tokens_seen:,} tokens")

# %%
history = trainer.state.log_history
train_losses = [(e["step"], e["loss"]) for e in history if "loss" in e]
eval_losses = [(e["step"], e["eval_loss"]) for e in history if "eval_loss" in e]
steps = [row[0] for row in monitor.rows]
rates = [(b[2] - a[2]) / (b[1] - a[1])
         for a, b in zip(monitor.rows, monitor.rows[1:], strict=False)]

figure, (loss_axis, memory_axis, speed_axis) = plt.subplots(1, 3, figsize=(11, 3))
loss_axis.plot(*zip(*train_losses, strict=True), marker="o", label="train")
loss_axis.plot(*zip(*eval_losses, strict=True), marker="s", label="eval (held out)")
loss_axis.set(xlabel="step", ylabel="loss", title="loss")
loss_axis.legend()
memory_axis.plot(steps, [row[3] for row in monitor.rows], marker="o")
memory_axis.set(xlabel="step", ylabel="MiB",
                title="GPU peak" if HAS_CUDA else "process memory (RSS)")
speed_axis.plot(steps[1:], rates, marker="o")
speed_axis.set(xlabel="step", ylabel="tokens / s", title="throughput")
figure.tight_layout()
plt.show()

print("checkpoints (the newest two are kept):")
for checkpoint in sorted((WORK / "checkpoints").glob("checkpoint-*")):
    files = {p.name: p.stat().st_size / 2**20 for p in checkpoint.iterdir() if p.is_file()}
    print(f"  {checkpoint.name}: adapter {files['adapter_model.safetensors']:.1f} MiB, "
          f"optimizer {files['optimizer.pt']:.1f} MiB, +{len(files) - 2} small files")
print("(configs, scheduler, RNG and trainer state); resume a killed run with\n"
      "trainer.train(resume_from_checkpoint=True), or agentcycle finetune ... --resume")

# %% [markdown]
# Each checkpoint holds the adapter, the optimizer state (Adam's moments: twice the
# adapter's size), the scheduler and the random-number state: what a resumed run needs
# to continue exactly where it stopped.
#
# ## 7. Save the adapter alone, and reload it
#
# `save_pretrained` on the PEFT model writes only the adapter: `adapter_config.json`
# (rank, alpha, targets, and the base it belongs to) and `adapter_model.safetensors`. To
# use it, load the **same** base and put the adapter on it with
# `PeftModel.from_pretrained`. We reload it on the full-precision base, the one it will
# be merged into (to serve it unmerged at a quarter of the memory, reload it on a fresh
# NF4 base instead), and check that it is really there: the logits with the adapter
# against the same model with the adapter switched off.

# %%
from peft import PeftModel


def size_mib(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2**20


ADAPTER_DIR, MERGED_DIR = WORK / "adapter", WORK / "merged"
trainer.model.save_pretrained(ADAPTER_DIR)
adapter_config = json.loads((ADAPTER_DIR / "adapter_config.json").read_text())
for key in ("r", "lora_alpha", "lora_dropout", "target_modules", "base_model_name_or_path"):
    value = adapter_config[key]
    print(f"{key:>24}: {', '.join(sorted(value)) if isinstance(value, list) else value}")
for path in sorted(ADAPTER_DIR.iterdir()):
    print(f"  {path.name}: {path.stat().st_size / 2**10:.0f} KiB")

full_precision = AutoModelForCausalLM.from_pretrained(BASE_DIR, dtype=torch.float32)
reloaded = PeftModel.from_pretrained(full_precision, ADAPTER_DIR).eval()
probe = tokenizer.apply_chat_template(to_examples([QUESTION])[0]["prompt"],
                                      add_generation_prompt=True, return_tensors="pt",
                                      return_dict=True).to(reloaded.device)


def logits_of(model) -> torch.Tensor:
    with torch.no_grad():
        return model(**probe).logits.float().cpu()


reloaded_logits = logits_of(reloaded)
with reloaded.disable_adapter():
    base_logits = logits_of(reloaded)
print(f"\nmax |logit change| the reloaded adapter makes: "
      f"{(reloaded_logits - base_logits).abs().max():.3f}")
print("reloaded answers:", answer(reloaded, QUESTION))

# %% [markdown]
# ## 8. Merge the adapter and compare sizes
#
# Merging adds `(alpha / r) · B A` into the base weights, so the served model needs no
# PEFT. A 4-bit base is **not** the one to merge into: the result would carry the 4-bit
# rounding (and bitsandbytes would have to requantise it). The QLoRA recipe, and
# agentcycle's `qlora` method, merge into the full-precision base, as here.

# %%
merged = reloaded.merge_and_unload()
print(f"max |logit difference|, merged vs adapter on the same base: "
      f"{(logits_of(merged) - reloaded_logits).abs().max():.5f} (merging is exact)")
merged.to(torch.bfloat16).save_pretrained(MERGED_DIR)  # bf16: half of fp32 on disk
tokenizer.save_pretrained(MERGED_DIR)

rows = [("base, fp32 on disk", size_mib(BASE_DIR / "model.safetensors")),
        ("base, NF4 in memory", trainer.model.get_base_model().get_memory_footprint() / 2**20),
        ("adapter alone", size_mib(ADAPTER_DIR)),
        ("merged, bf16 on disk", size_mib(MERGED_DIR / "model.safetensors"))]
print(f"\n{'what':<22} {'MiB':>8}")
for what, mib in rows:
    print(f"{what:<22} {mib:>8.1f}")

del reloaded, full_precision, merged, trainer, model
_ = gc.collect()

# %% [markdown]
# ## 9. Memory: full fine-tuning, LoRA and QLoRA
#
# Each method trains `MEMORY_STEPS` step(s) on the same example in its own Python
# process (a plain PyTorch loop: forward, backward, AdamW step), which reports its peak
# resident memory: the honest number, since one process's peak cannot be reset. LoRA and
# QLoRA use the adapter of this notebook; full fine-tuning trains all 135M weights.
# Then the same arithmetic for a 7B model.

# %%
MEASURE = """
import json, sys, time, torch
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
from agentcycle.finetune import tokenize_example

method, base, steps, config = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
tokenizer = AutoTokenizer.from_pretrained(base)
quantized = {"quantization_config": BitsAndBytesConfig(
    load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
    bnb_4bit_compute_dtype=torch.float32), "device_map": "cpu"}
model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32,
                                             **(quantized if method == "qlora" else {}))
if method == "qlora":
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
if method != "full":
    layers = model.config.num_hidden_layers
    model = get_peft_model(model, LoraConfig(
        r=config["rank"], lora_alpha=config["alpha"], target_modules=config["targets"],
        layers_to_transform=list(range(layers - config["top_layers"], layers)),
        task_type="CAUSAL_LM"))
optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
example = tokenize_example(tokenizer, config["example"], 128)
inputs = torch.tensor([example.input_ids])
labels = torch.tensor([example.labels])
started = time.perf_counter()
for _ in range(steps):  # forward, backward, optimizer step: everything a step holds
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config["bf16"]):
        loss = model(input_ids=inputs, labels=labels).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
seconds = time.perf_counter() - started
# VmHWM: this process's peak resident memory (ru_maxrss would include the parent's,
# which a child inherits across fork and exec on Linux).
status = open("/proc/self/status").read().split("VmHWM:")[1].split()[0]
print(json.dumps({"method": method, "seconds": seconds, "peak_mib": int(status) / 1024}))
"""
script = WORK / "measure_memory.py"
script.write_text(MEASURE)
measure_config = {"rank": RANK, "alpha": ALPHA, "targets": TARGETS, "top_layers": TOP_LAYERS,
                  "bf16": native_bf16() and not HAS_CUDA, "example": train_data[0]}
# The three run side by side, one thread each (their peaks are their own, and loading is
# single-threaded anyway); ~6 GiB together at their peaks.
runs = {method: subprocess.Popen(
    [sys.executable, str(script), method, str(BASE_DIR), str(MEMORY_STEPS),
     json.dumps(measure_config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"})
    for method in ("lora", "qlora", "full")}
measured = {}
for method, run in runs.items():
    out, err = run.communicate()
    if run.returncode:
        raise RuntimeError(f"{method} run failed:\n{err[-2000:]}")
    measured[method] = json.loads(out.strip().splitlines()[-1])
    print(f"{method:>6}: peak RSS {measured[method]['peak_mib']:,.0f} MiB")

# %% [markdown]
# On the 135M model on a CPU, QLoRA is **not** smaller than LoRA (agentcycle's earlier
# measurement: QLoRA 1,570 MiB, LoRA 1,304 MiB, full 2,998 MiB). The weights it shrinks
# are small here (~425 MB of fp32 linear layers, the 113 MB embedding stays as it is) next
# to what it adds: loading before quantising, the fp32 copies `prepare_model_for_kbit_
# training` makes, and dequantisation buffers. At 7B the weights dominate, and there:

# %%
def training_gib(parameters: float, adapter: float, method: str) -> float:
    """Weights + gradients + Adam state, without activations (they depend on the batch).

    full: bf16 weights and gradients, fp32 master weights and two Adam moments (16 B/param);
    lora: bf16 frozen weights (2 B/param) + the adapter at 16 B/param;
    qlora: NF4 with double quantisation (4.127 bits/param) for the linear layers, bf16
    embedding and head, + the adapter at 16 B/param."""
    embedding = 2 * 32_000 * 4096  # Llama-2-7B's input embedding and output head
    if method == "full":
        total = parameters * 16
    elif method == "lora":
        total = parameters * 2 + adapter * 16
    else:
        total = (parameters - embedding) * 4.127 / 8 + embedding * 2 + adapter * 16
    return total / 2**30


# Llama-2-7B: 32 layers, hidden 4096, MLP 11008; LoRA r=16 on all seven projections.
SEVEN_B = 6.74e9
adapter_7b = 32 * RANK * (4 * (4096 + 4096) + 3 * (4096 + 11008))
computed = {m: training_gib(SEVEN_B, adapter_7b, m) for m in ("lora", "qlora", "full")}
print(f"7B adapter: {adapter_7b / 1e6:.0f} M parameters")
print(f"{'method':>6} {'135M measured MiB':>18} {'7B computed GiB':>16}")
for method in ("full", "lora", "qlora"):
    print(f"{method:>6} {measured[method]['peak_mib']:>18,.0f} {computed[method]:>16.1f}")

figure, (small, large) = plt.subplots(1, 2, figsize=(9, 3.2))
order = ["full", "lora", "qlora"]
colours = ["tab:red", "tab:blue", "tab:green"]
small.bar(order, [measured[m]["peak_mib"] for m in order], color=colours)
small.set(ylabel="peak RSS (MiB)", title="135M on a CPU, measured")
large.bar(order, [computed[m] for m in order], color=colours)
large.axhline(24, linestyle="--", color="grey")
large.text(2.4, 25, "24 GB GPU", ha="right")
large.set(ylabel="GiB (no activations)", title="7B, computed")
figure.tight_layout()
plt.show()

# %% [markdown]
# At 7B: full fine-tuning needs a multi-GPU node (~100 GiB before activations), LoRA a
# 24-40 GB GPU, QLoRA a 12-16 GB one. That, not the 135M case, is why QLoRA exists.
#
# ## 10. Troubleshooting
#
# | symptom | cause | fix |
# |---|---|---|
# | `CUDA out of memory` | batch, length, rank | smaller micro-batch, more accumulation |
# | bitsandbytes: no kernel | bnb < 0.48, no CUDA | `pip install "bitsandbytes>=0.48"` |
# | loss is `nan` | fp16 overflow, high rate | bf16 instead of fp16; lower rate; warm-up |
# | loss ~0, nothing learnt | every label masked | raise `max_length`; check the mask |
# | `Target modules ... not found` | other architecture's names | `print(model)`; use its names |
# | reloaded adapter: nonsense | another base model | the base in `adapter_config.json` |
# | generation never stops | end-of-turn token untrained | keep `<|im_end|>` in the labels |
# | merged model worse than adapter | merged into 4-bit weights | merge into a bf16/fp32 base |
#
# Two of them, live. First, a prompt longer than `max_length` leaves no answer to learn
# from; agentcycle's tokeniser says so instead of training on nothing:

# %%
from agentcycle.errors import DataError
from agentcycle.finetune import tokenize_example

example = to_examples(chosen[:1], "train.jsonl")[0]
try:
    tokenize_example(tokenizer, example, max_length=48, where="train.jsonl:1")
except DataError as error:
    print(textwrap.fill(f"DataError: {error}", 80))

# %% [markdown]
# Second, LoRA target names from another architecture (Falcon's fused `query_key_value`)
# on this Llama-style model, tried on a tiny randomly initialised copy of its config:

# %%
from transformers import LlamaConfig, LlamaForCausalLM

tiny = LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128,
                                    num_hidden_layers=2, num_attention_heads=4,
                                    num_key_value_heads=2, vocab_size=1000))
try:
    get_peft_model(tiny, LoraConfig(r=4, target_modules=["query_key_value"]))
except ValueError as error:
    print(textwrap.fill(f"ValueError: {str(error).splitlines()[0]}", 80))
print("this model's linear layers:",
      sorted({n.split(".")[-1] for n, m in tiny.named_modules()
              if isinstance(m, torch.nn.Linear)}))

# %% [markdown]
# ## Clean up
#
# The adapter and merged model stay under `WORK` (notebook 04 evaluates a tuned model);
# the checkpoints and the memory runs' outputs can go.

# %%
import shutil

for folder in ("checkpoints", "memory-runs"):
    shutil.rmtree(WORK / folder, ignore_errors=True)
gc.collect()
print("kept:", ", ".join(p.name for p in sorted(WORK.iterdir())))
