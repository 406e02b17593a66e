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
# # 01 · Unsloth basics: a first LoRA fine-tune
#
# Fine-tuning teaches a model a narrow skill from a few hundred examples. This notebook
# walks through one complete run, from checking the hardware to a GGUF file that
# llama.cpp or Ollama can load:
#
# 1. verify Unsloth and CUDA (and what happens without them);
# 2. load a base model (4-bit on a GPU; bf16/fp32 on a CPU) and its maximum length;
# 3. add LoRA adapters and count the trainable parameters;
# 4. the chat template, the tokens, and the label mask (only the answer trains);
# 5. a quick SFT run: learning rate, epochs, batch, accumulation, mixed precision;
# 6. the tuned model against the base on held-out questions;
# 7. tokens/s and memory against plain PEFT + TRL `SFTTrainer` on the same data;
# 8. save the adapter, the merged model and a GGUF, and compare their sizes.
#
# **AI Lab image:** the fine-tuning image (a CUDA GPU and `pip install unsloth` for the
# Unsloth path); any Python 3.11+ kernel with `pip install "agentcycle[notebooks]"` runs
# the CPU path.
# **Prerequisites:** none. The base model is the bundled SmolLM2-135M-Instruct
# (`agentcycle.models.chat_model_dir`, or `AGENTCYCLE_CHAT_MODEL`); the data is the legal
# example shipped with agentcycle (questions about the fictional Residential Tenancy Act
# of Marvale). Nothing is downloaded.
#
# The model is tiny and, in the CI profile, trains for a handful of steps: the numbers
# show the mechanics, not a useful legal assistant. The full profile trains 240 examples
# for three epochs; on the platform, a 1-8B base on a GPU is where this recipe pays off.

# %% tags=["parameters"]
from agentcycle import lab

N_FACTS = lab.sized(ci=2, full=40)  # facts of the Act to teach (each has 6 wordings)
WORDINGS = lab.sized(ci=3, full=6)  # training questions per fact
MAX_STEPS = lab.sized(ci=6, full=-1)  # -1: train for EPOCHS instead
EPOCHS = lab.sized(ci=1.0, full=3.0)
BATCH_SIZE = lab.sized(ci=2, full=8)
TOP_LAYERS = lab.sized(ci=2, full=12)  # LoRA on the top N of the 30 decoder layers
MAX_LENGTH = lab.sized(ci=256, full=512)
COMPARE_STEPS = lab.sized(ci=3, full=20)  # the plain TRL run of section 7
GGUF_TYPE = "q8_0"  # or "f16"
ANSWER_TOKENS = lab.sized(ci=20, full=48)  # tokens generated per held-out answer
RANK, ALPHA = 16, 32
LEARNING_RATE = 1e-3

# %%
import contextlib
import importlib.util
import os
import threading
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
BASE_DIR = chat_model_dir(settings)  # converted once from the bundled GGUF, then cached
WORK = settings.ensure_home().resolve() / "lab" / "fine-tuning-01"
WORK.mkdir(parents=True, exist_ok=True)
print("base model:", BASE_DIR)
print("outputs:   ", WORK)

# %% [markdown]
# ## 1. Verify Unsloth and CUDA
#
# Unsloth rewrites the attention and MLP kernels of popular architectures for NVIDIA
# GPUs (Triton), which makes LoRA training about twice as fast and lighter on memory; it
# needs CUDA. We check what this kernel has and pick the path: **Unsloth** on a CUDA GPU
# with the package installed, otherwise **PEFT + TRL** on whatever device there is. The
# two paths train the same LoRA adapter on the same data and save the same files.

# %%
def cpu_has_native_bf16() -> bool:
    """bf16 at full speed on this CPU (AVX512-BF16 or AMX); elsewhere it is emulated."""
    with contextlib.suppress(OSError):
        flags = Path("/proc/cpuinfo").read_text()
        return "avx512_bf16" in flags or "amx_bf16" in flags
    return False


HAS_CUDA = torch.cuda.is_available()
HAS_UNSLOTH = importlib.util.find_spec("unsloth") is not None
USE_UNSLOTH = HAS_CUDA and HAS_UNSLOTH
BF16 = torch.cuda.is_bf16_supported() if HAS_CUDA else cpu_has_native_bf16()

checks = {
    "torch": torch.__version__,
    "CUDA GPU": torch.cuda.get_device_name(0) if HAS_CUDA else "none",
    "unsloth": "installed" if HAS_UNSLOTH else "not installed",
    "bitsandbytes": "installed" if importlib.util.find_spec("bitsandbytes") else "missing",
    "native bf16": "yes" if BF16 else "no (fp32)",
    "path taken": "Unsloth" if USE_UNSLOTH else "PEFT + TRL (agentcycle's fast CPU loop)",
}
for name, value in checks.items():
    print(f"{name:>14}: {value}")

# %% [markdown]
# Without a CUDA GPU (as in CI, or a laptop), Unsloth cannot run: importing it raises,
# and `agentcycle finetune --method unsloth` says `unsloth needs a CUDA GPU; none found`.
# The rest of the notebook then takes the PEFT + TRL path, on the CPU. On the platform's
# GPU image the same cells take the Unsloth path (`FastLanguageModel`, 4-bit base).

# %% [markdown]
# ## 2. Load the base model
#
# On a GPU, Unsloth loads the base in 4 bits (bitsandbytes NF4): a 7B model then takes
# ~4 GB instead of ~14 GB. On a CPU, 4-bit kernels are slow and save little on a 135M
# model (notebook 02 measures it), so we load fp32: bf16 weights halve the memory, but
# PyTorch's CPU kernels generate one token at a time slower in bf16 than in fp32 (we
# measured ~1.6x here). Training still uses bf16 *mixed precision* where the CPU has it
# natively (section 5). `max_seq_length` (Unsloth) or `max_length` (TRL) bounds each
# training example: activation memory grows with it, and longer records are cut.

# %%
from transformers import AutoModelForCausalLM, AutoTokenizer

DTYPE = torch.bfloat16 if HAS_CUDA and BF16 else torch.float32  # see above for the CPU
if USE_UNSLOTH:  # the GPU path (not run in CI: there is no GPU there)
    from unsloth import FastLanguageModel

    base_model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=str(BASE_DIR), max_seq_length=MAX_LENGTH, load_in_4bit=True)
else:
    tokenizer = AutoTokenizer.from_pretrained(BASE_DIR)
    base_model = AutoModelForCausalLM.from_pretrained(BASE_DIR, dtype=DTYPE)
base_model.eval()

config = base_model.config
parameters = sum(p.numel() for p in base_model.parameters())
print(f"architecture:        {config.architectures[0]}, {config.num_hidden_layers} layers, "
      f"hidden {config.hidden_size}")
print(f"parameters:          {parameters / 1e6:.1f} M")
print(f"weights in memory:   {base_model.get_memory_footprint() / 2**20:.0f} MiB "
      f"({next(base_model.parameters()).dtype})")
print(f"context it knows:    {config.max_position_embeddings} tokens")
print(f"training max length: {MAX_LENGTH} tokens (longer examples are cut)")

# %% [markdown]
# ## 3. LoRA adapters and trainable parameters
#
# LoRA freezes every weight `W` and learns a low-rank update `B·A` beside chosen linear
# layers: `W x + (alpha / r) · B A x`, with `A` of shape `r × in` and `B` of `out × r`.
# Only `A` and `B` train, so the optimizer state is tiny and the adapter file is a few
# MB. The knobs: the **rank** `r` (capacity), **alpha** (scale; `alpha = 2r` is a common
# start), the **target modules** (attention and MLP projections), **dropout**, and here
# the **layers**: agentcycle puts LoRA on the top layers only, which halves a CPU step for
# little loss on a small domain adapter.

# %%
from collections import defaultdict

from peft import LoraConfig, get_peft_model

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LAYERS = config.num_hidden_layers
TRAINED_LAYERS = list(range(LAYERS - TOP_LAYERS, LAYERS))
lora_config = LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=TARGETS,
                         layers_to_transform=TRAINED_LAYERS, task_type="CAUSAL_LM")
peft_model = get_peft_model(base_model, lora_config)
peft_model.print_trainable_parameters()

per_module = defaultdict(int)
for name, parameter in peft_model.named_parameters():
    if parameter.requires_grad:  # ...layers.29.self_attn.q_proj.lora_A.default.weight
        per_module[name.split(".")[-4]] += parameter.numel()
first = peft_model.get_base_model().model.layers[TRAINED_LAYERS[0]]
print(f"\n{'module':<10} {'in -> out':>13} {'A + B per layer':>16} {'all layers':>11}")
for target in TARGETS:
    linear = getattr(first.self_attn, target, None) or getattr(first.mlp, target)
    shape = f"{linear.in_features} -> {linear.out_features}"
    print(f"{target:<10} {shape:>13} {RANK * (linear.in_features + linear.out_features):>16,} "
          f"{per_module[target]:>11,}")


def lora_parameters(rank: int, layers: int) -> int:
    """A + B over ``layers`` layers (every layer has the first one's shapes)."""
    linears = [getattr(first.self_attn, t, None) or getattr(first.mlp, t) for t in TARGETS]
    return layers * sum(rank * (m.in_features + m.out_features) for m in linears)


print(f"\n{'rank':>4} {'top ' + str(TOP_LAYERS) + ' layers':>14} {'all layers':>12} "
      f"{'% of model':>10}")
for rank in (4, 8, 16, 32, 64):
    top, every = lora_parameters(rank, TOP_LAYERS), lora_parameters(rank, LAYERS)
    print(f"{rank:>4} {top:>14,} {every:>12,} {100 * every / parameters:>9.2f}%")

# The training run below builds its own adapter: take this one off the base model again.
base_model = peft_model.unload()
del peft_model

# %% [markdown]
# ## 4. Chat template and tokenising
#
# A chat model was trained on conversations rendered by its **chat template** (a Jinja
# template in `tokenizer_config.json`). Training data must be rendered the same way the
# server will render requests, or the model learns a format it never sees again. The
# **label mask** decides what the loss covers: the prompt's labels are set to `-100`
# (ignored by the cross-entropy), so the model learns to answer, not to repeat the
# question. `agentcycle.finetune.tokenize_example` does exactly that.
#
# The data: questions about the Act with one-sentence answers. We teach a few facts with
# several wordings each and keep the test split's questions on the same facts (worded
# differently, never trained on) for section 6.

# %%
from agentcycle.examples.legal import legal_split
from agentcycle.finetune import read_jsonl, to_examples, tokenize_example
from agentcycle.finetune.tokenize import IGNORE_INDEX

train_records = read_jsonl(legal_split("train"))
test_by_fact = {record["fact"]: record for record in read_jsonl(legal_split("test"))}
facts = [fact for fact in dict.fromkeys(r["fact"] for r in train_records)
         if fact in test_by_fact][:N_FACTS]
chosen = []
for fact in facts:
    chosen += [r for r in train_records if r["fact"] == fact][:WORDINGS]
held_out = [test_by_fact[fact] for fact in facts]
examples = to_examples(chosen, "train.jsonl")  # prompt/completion pairs, the RAG prompt
print(f"{len(examples)} training examples on {len(facts)} facts; "
      f"{len(held_out)} held-out questions")
print(f"\nthe chat template ({len(tokenizer.chat_template)} characters), its start:\n")
print(tokenizer.chat_template[:400], "...")

# %%
example = examples[0]
rendered = tokenizer.apply_chat_template(example["prompt"] + example["completion"],
                                         tokenize=False)
print("the rendered conversation:\n")
print(rendered)
tokenized = tokenize_example(tokenizer, example, MAX_LENGTH)
prompt_tokens = len(tokenized) - tokenized.answer_tokens
print(f"{len(tokenized)} tokens: {prompt_tokens} prompt tokens masked (label -100), "
      f"{tokenized.answer_tokens} answer tokens trained")

# %%
print(f"{'pos':>4} {'token id':>8}  {'text':<18} label")
start = max(prompt_tokens - 6, 0)  # the end of the prompt and the whole answer
for position in range(start, len(tokenized)):
    token_id, label = tokenized.input_ids[position], tokenized.labels[position]
    text = repr(tokenizer.decode([token_id]))[:18]
    shown = "-100 (masked)" if label == IGNORE_INDEX else f"{label} (trained)"
    print(f"{position:>4} {token_id:>8}  {text:<18} {shown}")
answer = [t for t, label in zip(tokenized.input_ids, tokenized.labels, strict=True)
          if label != IGNORE_INDEX]
print("\nwhat the loss covers:", repr(tokenizer.decode(answer)))

# %% [markdown]
# The answer ends with `<|im_end|>`: the model also learns to **stop**. A template
# without an assistant marker to split on, or a prompt longer than `max_length`, is
# refused with a clear error rather than silently training on nothing (notebook 02 shows
# the second one live).
#
# ## 5. A quick SFT run
#
# `agentcycle.finetune.finetune` trains, merges the adapter into the base, writes a plain
# Hugging Face directory, and logs the parameters and loss curve to MLflow. The recipe:
#
# | setting | here | why |
# |---|---|---|
# | learning rate | 1e-3 | LoRA: 1e-4 to 1e-3 (full fine-tuning: ~2e-5); cosine decay |
# | epochs / steps | `EPOCHS` or `MAX_STEPS` | a few epochs; more memorises the wordings |
# | batch | `BATCH_SIZE` | examples per optimizer step |
# | accumulation | 1 here; TRL in section 7 | effective batch = batch x accumulation x GPUs |
# | mixed precision | bf16 where native | half the activation memory; fp16 needs scaling |
#
# Gradient accumulation sums the gradients of several micro-batches before one optimizer
# step: the batch of a big GPU on a small one, at the cost of time.
#
# On a CPU, `method="lora"` runs agentcycle's fast loop (the frozen lower layers run once,
# logits only on answer tokens): the same adapter and loss as TRL, in less time. On a
# GPU it runs TRL's `SFTTrainer`; with Unsloth installed, `method="unsloth"`.

# %%
from agentcycle.finetune import TrainParams, finetune

METHOD = "unsloth" if USE_UNSLOTH else "lora"
params = TrainParams(learning_rate=LEARNING_RATE, epochs=EPOCHS, max_steps=MAX_STEPS,
                     batch_size=BATCH_SIZE, rank=RANK, alpha=ALPHA, max_length=MAX_LENGTH,
                     top_layers=TOP_LAYERS, bf16=BF16, target_modules=TARGETS, save_steps=0)


class PeakMemory:
    """The process's peak resident memory while the block runs, sampled every 50 ms."""

    def __enter__(self):
        self.process, self.peak, self._done = psutil.Process(), 0, threading.Event()
        self.before = self.process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._done.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self._done.wait(0.05)

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()
        self.added_mib = (self.peak - self.before) / 2**20
        self.peak_mib = self.peak / 2**20


step_times: list[float] = []


def on_step(done: int, total: int, loss: float | None) -> None:
    step_times.append(time.perf_counter())
    print(f"step {done}/{total}  loss {loss:.3f}")


with PeakMemory() as fast_memory:
    result = finetune(examples, WORK / "legal-tuned", BASE_DIR, settings, params,
                      method=METHOD, overwrite=True, on_step=on_step, run_name="notebook-01")
print(f"\n{result.steps} steps in {result.seconds:.0f} s (loading, training, merging, "
      f"saving); {result.tokens:,} tokens; final loss {result.final_loss:.3f}")
print("MLflow run:", result.run_id)

# %%
figure, axis = plt.subplots(figsize=(6, 3))
axis.plot([s for s, _ in result.losses], [v for _, v in result.losses], marker="o")
axis.set(xlabel="step", ylabel="training loss (answer tokens)",
         title=f"{METHOD}: {len(examples)} examples, batch {BATCH_SIZE}")
figure.tight_layout()
plt.show()

# %% [markdown]
# ## 6. The tuned model against the base
#
# Greedy answers to the held-out questions (the test split: same facts, other
# wordings), with the fact's key figure checked in each answer. After a few CI steps the
# answers barely move. Expect little more from longer runs on a 135M model: agentcycle's
# benchmark (docs/benchmarks.md) tuned it on all 208 facts and it learnt the answer's
# *form* (short, one fact, the section cited) but few facts (key-fact accuracy 11% ->
# 14-16%, not significant). Facts belong in retrieval; a 1-8B base on the platform's
# GPU is where tuning also moves accuracy.

# %%
import textwrap


def answer(model, record: dict, max_new_tokens: int = ANSWER_TOKENS) -> str:
    prompt = to_examples([record])[0]["prompt"]  # the same prompt format as in training
    inputs = tokenizer.apply_chat_template(prompt, add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                pad_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1]:],
                            skip_special_tokens=True).strip()


tuned_model = AutoModelForCausalLM.from_pretrained(result.model_dir, dtype=DTYPE).eval()
hits = {"base": 0, "tuned": 0}
for record in held_out:
    keyword = record["keywords"][0]
    print(textwrap.fill("Q: " + record["question"], 80))
    print(textwrap.fill(f"   expected: {record['answer']}", 80, subsequent_indent="      "))
    for name, model in (("base", base_model), ("tuned", tuned_model)):
        text = answer(model, record)
        found = keyword.lower() in text.lower()
        hits[name] += found
        print(textwrap.fill(f"   {name:<5} [{'has' if found else 'lacks'} {keyword!r}]: {text}",
                            80, subsequent_indent="      "))
    print()
print(f"{'model':<6} {'answers with the key figure':>28}")
for name, count in hits.items():
    print(f"{name:<6} {count:>20} / {len(held_out)}")

# %% [markdown]
# ## 7. Speed and memory against plain PEFT + TRL
#
# Unsloth's claim is speed and memory against the plain Hugging Face stack. Without a
# GPU we measure the CPU analogue: agentcycle's fast loop (section 5) against PEFT + TRL
# `SFTTrainer` on the same examples, the same adapter and the same effective batch (here
# as a micro-batch of 1 with 2 steps of gradient accumulation, to show the setting).
# Tokens/s counts the real (non-padding) tokens of the steps after the first (the first
# includes warm-up); memory is the peak resident memory of this process during the run.

# %%
from datasets import Dataset
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback
from trl import SFTConfig, SFTTrainer


class StepClock(TrainerCallback):
    """When each optimizer step ends, and how many input tokens were seen by then."""

    def __init__(self):
        self.times, self.tokens = [], []

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter())
        self.tokens.append(state.num_input_tokens_seen)


ACCUMULATION = 2
trl_config = SFTConfig(
    output_dir=str(WORK / "trl-checkpoints"), max_steps=COMPARE_STEPS,
    per_device_train_batch_size=max(BATCH_SIZE // ACCUMULATION, 1),
    gradient_accumulation_steps=ACCUMULATION, learning_rate=LEARNING_RATE,
    lr_scheduler_type="cosine", max_length=MAX_LENGTH, completion_only_loss=True,
    bf16=BF16, use_cpu=not HAS_CUDA, gradient_checkpointing=False, logging_steps=1,
    save_strategy="no", report_to="none", disable_tqdm=True, seed=7,
    include_num_input_tokens_seen="non_padding")
clock = StepClock()
with PeakMemory() as trl_memory:
    trl_model = AutoModelForCausalLM.from_pretrained(BASE_DIR, dtype=torch.float32)
    trainer = SFTTrainer(model=trl_model, args=trl_config,
                         train_dataset=Dataset.from_list(examples), processing_class=tokenizer,
                         peft_config=lora_config, callbacks=[clock])
    trainer.remove_callback(PrinterCallback)  # no raw log dicts in the output
    trl_output = trainer.train()
trl_losses = [(e["step"], e["loss"]) for e in trainer.state.log_history if "loss" in e]

fast_rate = (result.tokens / result.steps) * (len(step_times) - 1) / (
    step_times[-1] - step_times[0])
trl_rate = (clock.tokens[-1] - clock.tokens[0]) / (clock.times[-1] - clock.times[0])
rows = [("agentcycle fast loop", fast_rate, fast_memory), ("PEFT + TRL", trl_rate, trl_memory)]
print(f"{'trainer':<21} {'tokens/s':>9} {'peak RSS MiB':>13} {'added MiB':>10}")
for name, rate, memory in rows:
    print(f"{name:<21} {rate:>9.0f} {memory.peak_mib:>13.0f} {memory.added_mib:>10.0f}")
print(f"\nspeed-up: {fast_rate / trl_rate:.1f}x on this machine "
      f"(load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")

# %%
figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3))
left.bar([r[0] for r in rows], [r[1] for r in rows], color=["tab:green", "tab:blue"])
left.set(ylabel="tokens / s", title="training speed")
right.plot([s for s, _ in result.losses], [v for _, v in result.losses], marker="o",
           label="fast loop", color="tab:green")
right.plot([s for s, _ in trl_losses], [v for _, v in trl_losses], marker="o",
           label="PEFT + TRL", color="tab:blue")
right.set(xlabel="step", ylabel="loss", title="same data, same start")
right.legend()
figure.tight_layout()
plt.show()
del trainer, trl_model

# %% [markdown]
# The memory column is coarse: both runs happen in this one process, after the base
# model is loaded, so "added" is what each run needed on top. On a GPU the honest
# numbers come from `torch.cuda.max_memory_allocated()`; Unsloth's published gains
# (about 2x speed, 50-70% less memory on 7-8B models) are a GPU result.
#
# ## 8. Save: the adapter, the merged model, a GGUF
#
# Three artifacts, for three ways of serving:
#
# - the **adapter** alone (`adapter/`): a few MB, loaded on top of the same base with
#   `PeftModel.from_pretrained`, or served beside other adapters
#   (`agentcycle serve BASE --adapter legal=DIR`, vLLM `--enable-lora`);
# - the **merged** model: base weights with `B·A` added in, a plain Hugging Face
#   directory any engine serves (finetune already wrote it);
# - a **GGUF** for llama.cpp and Ollama: `agentcycle.finetune.export_gguf` writes it and,
#   with `verify=True`, loads it back and compares its logits with the merged model's.
#
# On a GPU with Unsloth the same three come from `model.save_pretrained(...)`,
# `model.save_pretrained_merged(...)` and `model.save_pretrained_gguf(...)` (which builds
# llama.cpp for the quantisation).

# %%
import io

from agentcycle.finetune import export_gguf


def size_mib(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2**20


gguf_path = WORK / f"legal-tuned.{GGUF_TYPE}.gguf"
with contextlib.redirect_stderr(io.StringIO()):  # the check's loading progress bars
    exported = export_gguf(result.model_dir, gguf_path, type=GGUF_TYPE, verify=True,
                           overwrite=True)
print(f"GGUF written in {exported.seconds:.0f} s, tokenizer {exported.tokenizer}")
if exported.check:  # the GGUF loaded back with transformers, logits against the model's
    check = exported.check
    print(f"round trip: max |logit diff| {check.max_abs_diff:.2f}, mean "
          f"{check.mean_abs_diff:.2f}, top-1 agreement {100 * check.top1_agreement:.1f}% "
          f"over {check.positions} positions")

artifacts = [("base model (fp32)", BASE_DIR), ("adapter", result.adapter_dir),
             ("merged model (fp32)", result.model_dir), (f"GGUF {GGUF_TYPE}", gguf_path)]
print(f"\n{'artifact':<20} {'MiB':>8}  path")
for name, path in artifacts:
    shown = size_mib(path) - (size_mib(result.adapter_dir) if path == result.model_dir else 0)
    print(f"{name:<20} {shown:>8.1f}  {path.relative_to(path.parents[1])}")

# %% [markdown]
# The adapter is ~1% of the model: keep one base and many adapters. The merged model is
# as big as the base (saved in fp32 here; bf16 halves it). The q8_0 GGUF is a quarter of
# fp32 at a small cost in accuracy (the round trip above); `ollama create` with a
# `Modelfile` whose `FROM` is that file serves it.
#
# ## Clean up
#
# The models stay under `WORK` for notebook 04 (evaluation); drop them from memory here.

# %%
import gc
import shutil

del base_model, tuned_model
gc.collect()
shutil.rmtree(WORK / "trl-checkpoints", ignore_errors=True)  # section 7 saved none
print("kept:", ", ".join(p.name for p in sorted(WORK.iterdir())))
