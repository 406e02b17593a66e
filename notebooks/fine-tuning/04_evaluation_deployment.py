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
# # 04 · Evaluation and deployment: from a tuned model to a monitored service
#
# A fine-tune is worth deploying only when it measurably beats its base and serves fast
# enough. This notebook evaluates a tuned model, shrinks it, exports it, serves it, loads
# it, and writes what a cluster needs to run it:
#
# 1. load the tuned model (a small LoRA trained here with `agentcycle.finetune`);
# 2. perplexity, key-fact accuracy, BLEU/ROUGE and speed, base against tuned;
# 3. sample outputs at several temperatures;
# 4. INT8 and INT4 quantisation: size, speed, quality;
# 5. export: safetensors, GGUF and a model card;
# 6. serving: vLLM (GPU) and `transformers serve` (CPU) against plain `generate`;
# 7. KV cache, batching, continuous batching, measured;
# 8. p50/p95/p99 latency under concurrency;
# 9. a GPU Deployment on Kubernetes with probes and autoscaling (validated offline);
# 10. production monitoring: traces in Langfuse or MLflow;
# 11. the MLflow registry: `@champion` moves only when the gate passes;
# 12. a deployment checklist computed from the results above.
#
# **AI Lab image:** the fine-tuning image (a GPU for vLLM and bitsandbytes' fast 4-bit
# kernels); any Python 3.11+ kernel with `pip install "agentcycle[notebooks]"` runs the
# CPU path end to end.
# **Prerequisites:** none. The base is the bundled SmolLM2-135M-Instruct, the data the
# legal example shipped with agentcycle; nothing is downloaded. In the CI profile the
# adapter trains for a handful of steps and everything is measured on a few requests:
# the numbers show the mechanics (and how noisy tiny samples are), not a useful model.

# %% tags=["parameters"]
from agentcycle import lab

N_FACTS = lab.sized(ci=3, full=60)  # facts of the Act to train on (6 wordings each)
MAX_STEPS = lab.sized(ci=4, full=-1)  # -1: train for EPOCHS instead
EPOCHS = lab.sized(ci=1.0, full=3.0)
TOP_LAYERS = lab.sized(ci=2, full=12)  # LoRA on the top N decoder layers
N_EVAL = lab.sized(ci=3, full=30)  # held-out test questions about the trained facts
MAX_TOKENS = lab.sized(ci=16, full=48)  # tokens per generated answer
BENCH_TOKENS = lab.sized(ci=6, full=32)  # tokens per speed and load-test request
N_REQUESTS = lab.sized(ci=6, full=48)  # requests of the load test
CONCURRENCY = lab.sized(ci=3, full=8)
BATCH_SIZE = lab.sized(ci=2, full=8)
VERIFY_GGUF = lab.sized(ci=False, full=True)  # reload the GGUF and compare logits (~1 min)
TEMPERATURES = [0.0, 0.7, 1.2]
SEED = 7

# %%
import contextlib
import copy
import io
import json
import math
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # bundled models only: never the Hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline cost map

import httpx
import matplotlib.pyplot as plt
import pandas as pd
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from agentcycle import Settings
from agentcycle.examples.legal import legal_split
from agentcycle.finetune import read_jsonl, to_examples
from agentcycle.models import chat_model_dir

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()
pd.set_option("display.width", 80)
pd.set_option("display.max_colwidth", 40)
torch.manual_seed(SEED)

settings = Settings()
lab.show_services(settings)
BASE_DIR = chat_model_dir(settings)  # converted once from the bundled GGUF, then cached
WORK = Path("eval-deploy")
WORK.mkdir(exist_ok=True)
stack = contextlib.ExitStack()  # closed in the last cell

# %% [markdown]
# ## 1. The tuned model
#
# `agentcycle.finetune.finetune` trains a LoRA adapter on the legal training questions
# of `N_FACTS` facts, merges it, and writes a plain Hugging Face directory that every
# engine serves as is (the adapter is kept in `adapter/`). It logs the parameters and
# the loss curve to MLflow. Every later section loads this directory; notebook 01 or 02
# (or `agentcycle finetune`) produce the same kind of directory with a longer run.

# %%
from agentcycle.finetune import TrainParams, finetune
from agentcycle.finetune.dataprep import write_jsonl

train_all = read_jsonl(legal_split("train"))
test_all = read_jsonl(legal_split("test"))
# The test split asks about the same facts in other words: held-out questions whose
# answers the training taught. Take facts that have a test question.
facts = list(dict.fromkeys(r["fact"] for r in test_all))[:N_FACTS]
train_records = [r for r in train_all if r["fact"] in facts]
train_path = write_jsonl(WORK / "train.jsonl", train_records)
eval_records = [r for r in test_all if r["fact"] in facts][:N_EVAL]

params = TrainParams(max_steps=MAX_STEPS, epochs=EPOCHS, batch_size=BATCH_SIZE,
                     top_layers=TOP_LAYERS,
                     learning_rate=1e-3, save_steps=0, seed=SEED)
result = finetune(to_examples(train_records), WORK / "legal-tuned", BASE_DIR, settings, params,
                  overwrite=True)
TUNED_DIR = result.model_dir
print(f"{result.method}: {result.steps} steps on {result.examples} examples in "
      f"{result.seconds:.0f} s, final loss {result.final_loss:.3f}; MLflow run {result.run_id}")

steps, losses = zip(*result.losses, strict=True)
plt.figure(figsize=(5, 2.5))
plt.plot(steps, losses, marker="o")
plt.title("training loss (answer tokens only)")
plt.xlabel("step")
plt.ylabel("loss")
plt.tight_layout()
plt.show()

# %%
tokenizer = AutoTokenizer.from_pretrained(TUNED_DIR)
models = {"base": AutoModelForCausalLM.from_pretrained(BASE_DIR, dtype=torch.float32).eval(),
          "tuned": AutoModelForCausalLM.from_pretrained(TUNED_DIR, dtype=torch.float32).eval()}
eval_examples = to_examples(eval_records)  # the same prompt format the model trained on
for name, model in models.items():
    print(f"{name}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
          f"{model.get_memory_footprint() / 2**20:.0f} MiB in memory")

# %% [markdown]
# ## 2. Perplexity, accuracy, BLEU/ROUGE and speed: base against tuned
#
# - **Perplexity** of the reference answers given the prompt: exp of the mean loss on
#   the answer tokens only (the same label mask as training). Lower: the model finds
#   the right answer less surprising.
# - **Accuracy**: agentcycle's key-fact scorer (`keywords`, the scorer of the legal
#   suites): every key fact of the case (a date, an amount, a deadline) must be in the
#   answer, which must stay under 40 words.
# - **BLEU/ROUGE-L** against the reference answer (sacrebleu, rouge-score; offline):
#   surface overlap, a weak proxy for correctness but cheap and standard.
# - **Speed**: generated tokens per second, greedy, one request at a time.

# %%
import sacrebleu
from rouge_score import rouge_scorer

from agentcycle.evals.scorers.text import keywords as key_fact_scorer
from agentcycle.evals.scoring import ScoreContext
from agentcycle.evals.types import Case, Output
from agentcycle.finetune import tokenize_example


def perplexity(model, examples: list[dict]) -> float:
    total_loss, total_tokens = 0.0, 0
    with torch.no_grad():
        for example in examples:
            done = tokenize_example(tokenizer, example, max_length=512)
            out = model(torch.tensor([done.input_ids]), labels=torch.tensor([done.labels]))
            total_loss += out.loss.item() * done.answer_tokens
            total_tokens += done.answer_tokens
    return math.exp(total_loss / total_tokens)


def generate(model, messages: list[dict], max_new_tokens: int, temperature: float = 0.0,
             use_cache: bool = True) -> tuple[str, int, float]:
    """(text, new tokens, seconds) for one chat request."""
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    sampling = ({"do_sample": True, "temperature": temperature, "top_p": 0.95}
                if temperature > 0 else {"do_sample": False})
    started = time.perf_counter()
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, use_cache=use_cache,
                                pad_token_id=tokenizer.eos_token_id, **sampling)
    seconds = time.perf_counter() - started
    new = output[0][inputs["input_ids"].shape[1]:]
    return tokenizer.decode(new, skip_special_tokens=True).strip(), len(new), seconds


def key_facts(record: dict, answer: str) -> float:
    case = Case(id=record["id"], input=record["question"], reference=record["answer"],
                keywords=record["keywords"])
    return key_fact_scorer(case, Output(text=answer), ScoreContext(), max_words=40).value


rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
answers: dict[str, list[str]] = {}
metrics: dict[str, dict[str, float]] = {}
for name, model in models.items():
    runs = [generate(model, example["prompt"], MAX_TOKENS) for example in eval_examples]
    answers[name] = [text for text, _, _ in runs]
    references = [r["answer"] for r in eval_records]
    metrics[name] = {
        "perplexity": perplexity(model, eval_examples),
        "accuracy": statistics.fmean(key_facts(r, a) for r, a in zip(
            eval_records, answers[name], strict=True)),
        "bleu": sacrebleu.corpus_bleu(answers[name], [references]).score,
        "rougeL": statistics.fmean(rouge.score(ref, hyp)["rougeL"].fmeasure
                                   for ref, hyp in zip(references, answers[name], strict=True)),
        "tokens/s": sum(n for _, n, _ in runs) / sum(s for _, _, s in runs),
    }
comparison = pd.DataFrame(metrics).T
print(comparison.round(3).to_string())
print(f"\n{len(eval_records)} questions: differences this small are noise; the demo's "
      "194-question run with Wilson intervals is the real comparison (README).")
for record, base, tuned in zip(eval_records, answers["base"], answers["tuned"], strict=True):
    print(f"\nQ: {record['question']}\n   reference: {record['answer']}\n"
          f"   base:      {base[:110]}\n   tuned:     {tuned[:110]}")

# %% [markdown]
# ## 3. Sample outputs at several temperatures
#
# Temperature rescales the next-token distribution: 0 is greedy (the same answer every
# time, best for facts), higher values sample more freely (more varied, more often
# wrong). A small model drifts quickly above ~1.

# %%
question = eval_examples[0]["prompt"]
for temperature in TEMPERATURES:
    torch.manual_seed(SEED)
    text, _, _ = generate(models["tuned"], question, MAX_TOKENS, temperature)
    print(f"T={temperature}: {text[:150]}")

# %% [markdown]
# ## 4. INT8 and INT4 quantisation: size, speed, quality
#
# - **INT8, dynamic** (`torch.ao.quantization.quantize_dynamic`): the Linear weights of
#   the decoder layers stored as int8, activations quantised on the fly; CPU only, no
#   calibration data. The output head stays in full precision (it shares its weights
#   with the embedding). One scale per weight matrix is coarse: on this 135M model it
#   roughly doubles the perplexity (measured below), where NF4's per-block scales stay
#   close to full precision.
# - **INT4, NF4** (bitsandbytes `BitsAndBytesConfig(load_in_4bit=True)`): 4-bit weights
#   in the NormalFloat format QLoRA uses; fast kernels on a CUDA GPU, slow fallback
#   kernels on a CPU.
#
# Quality is the perplexity on the same answers as above. On a 135M model the
# embedding (49K x 576, kept in full precision) is a large share of the weights, so
# the shrink is smaller than on a 7B model, and the CPU int4 path is slower, not
# faster: on a GPU it is the other way round.

# %%
def weight_bytes(model) -> int:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def quant_row(name: str, model, size: int, known_perplexity: float | None = None) -> dict:
    _, tokens, seconds = generate(model, question, BENCH_TOKENS)
    score = known_perplexity or perplexity(model, eval_examples)
    return {"variant": name, "MiB": round(size / 2**20), "perplexity": round(score, 3),
            "tokens/s": round(tokens / seconds, 1)}


quantised = [quant_row("fp32", models["tuned"], weight_bytes(models["tuned"]),
                       metrics["tuned"]["perplexity"])]
int8 = copy.deepcopy(models["tuned"])
int8.model.layers = torch.ao.quantization.quantize_dynamic(int8.model.layers,
                                                           {torch.nn.Linear}, dtype=torch.qint8)
quantised.append(quant_row("int8 dynamic", int8, weight_bytes(int8)))
del int8
try:
    from transformers import BitsAndBytesConfig

    nf4 = AutoModelForCausalLM.from_pretrained(TUNED_DIR, quantization_config=BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32))
    quantised.append(quant_row("int4 nf4 (bnb)", nf4, nf4.get_memory_footprint()))
    del nf4
except Exception as exc:  # bitsandbytes without a usable backend on this machine
    print(f"bitsandbytes 4-bit unavailable here: {type(exc).__name__}: {exc}")
print(pd.DataFrame(quantised).to_string(index=False))
print("(MiB: serialized weights for fp32/int8, bitsandbytes' memory footprint for nf4)")

# %% [markdown]
# ## 5. Export: safetensors, GGUF and a model card
#
# The tuned directory already is the safetensors export (`model.safetensors`,
# `config.json`, the tokenizer and its chat template): vLLM, `transformers serve` and
# TGI load it as is. `agentcycle.finetune.export_gguf` writes the GGUF that llama.cpp and
# Ollama load (`q8_0`: 8-bit blocks; `f16`); with `verify=True` it loads the file back
# and compares logits with the HF model before the file appears (about a minute: on in
# the full profile). The model card says what the model is, how it was made and how it
# scored.

# %%
from agentcycle.finetune import export_gguf

gguf = export_gguf(TUNED_DIR, WORK / "legal-tuned.q8_0.gguf", "q8_0", verify=VERIFY_GGUF,
                   overwrite=True)
print(f"GGUF {gguf.path.name}: {gguf.bytes / 2**20:.0f} MiB, {gguf.tensors} tensors, "
      f"{gguf.seconds:.1f} s, tokenizer {gguf.tokenizer}")
if gguf.check:
    print(f"  round trip: top-1 agreement {gguf.check.top1_agreement:.1%}, "
          f"max |logit diff| {gguf.check.max_abs_diff:.3f}")
files = sorted((p for p in TUNED_DIR.rglob("*") if p.is_file()), key=lambda p: -p.stat().st_size)
print(pd.DataFrame([{"file": str(p.relative_to(TUNED_DIR)), "MiB": round(p.stat().st_size
                                                                        / 2**20, 2)}
                    for p in files[:8]]).to_string(index=False))

card = f"""---
base_model: HuggingFaceTB/SmolLM2-135M-Instruct
library_name: transformers
license: apache-2.0
tags: [agentcycle, lora, legal, marvale]
---
# legal-tuned

SmolLM2-135M-Instruct with a LoRA adapter ({result.method}, rank {params.rank}, top
{params.top_layers} layers) merged in, trained on {result.examples} questions about the
fictional Residential Tenancy Act of Marvale (agentcycle's legal example).

| metric ({len(eval_records)} held-out questions) | base | tuned |
|---|---:|---:|
""" + "\n".join(f"| {m} | {metrics['base'][m]:.3f} | {metrics['tuned'][m]:.3f} |"
                for m in ("perplexity", "accuracy", "bleu", "rougeL")) + f"""

- Training: {result.steps} steps, final loss {result.final_loss:.3f}, MLflow run
  `{result.run_id}`.
- Files: safetensors (this folder), GGUF `{gguf.path.name}` ({gguf.type}).
- Limits: a 135M model; answers facts of one fictional statute; not legal advice.
"""
(TUNED_DIR / "README.md").write_text(card)
print(card)

# %% [markdown]
# ## 6. Serving: vLLM on a GPU, `transformers serve` on a CPU
#
# `agentcycle serve` (`agentcycle.serving.ModelServer`) picks vLLM when it is installed
# and a GPU is visible, else `transformers serve` behind a small gate that checks the
# API key. **vLLM needs a CUDA GPU: this machine has none**, so below are the exact
# arguments agentcycle would run it with (the merged model, and the adapter served
# unmerged over its base), and the CPU engine is what we measure in section 7 against
# plain `generate` in this process: the server adds HTTP and JSON, and gains batching.

# %%
from agentcycle.serving import ModelServer
from agentcycle.serving.server import choose_engine

print("engine on this machine:", choose_engine())
merged_vllm = ModelServer(TUNED_DIR, engine="vllm", model_name="legal", port=8000,
                          host="0.0.0.0").command()
adapter_vllm = ModelServer(BASE_DIR, engine="vllm", port=8000, host="0.0.0.0",
                           adapters={"legal": result.adapter_dir}).command()
print("vLLM, merged model:\n  " + " ".join(merged_vllm))
print("vLLM, adapter over the base:\n  " + " ".join(adapter_vllm))

API_KEY = "nb-" + os.urandom(6).hex()
server = stack.enter_context(ModelServer(TUNED_DIR, api_key=API_KEY, model_name="legal"))
http = stack.enter_context(httpx.Client(headers={"Authorization": f"Bearer {API_KEY}"},
                                        timeout=300))
print(f"serving {TUNED_DIR.name} with {server.engine} at {server.base_url}")


def ask(messages: list[dict], max_tokens: int = MAX_TOKENS) -> dict:
    started = time.perf_counter()
    reply = http.post(f"{server.base_url}/chat/completions", json={
        "model": "legal", "messages": messages, "max_tokens": max_tokens,
        "temperature": 0}).raise_for_status().json()
    return {"seconds": time.perf_counter() - started,
            "tokens": reply["usage"]["completion_tokens"],
            "prompt_tokens": reply["usage"]["prompt_tokens"],
            "text": reply["choices"][0]["message"]["content"]}


first = ask(question)
print(f"one request: {first['tokens']} tokens in {first['seconds']:.2f} s: {first['text'][:80]}")

# %% [markdown]
# ## 7. KV cache, batching, continuous batching
#
# - **KV cache**: each new token attends to the keys and values of every earlier token;
#   cached, they are computed once, otherwise the whole sequence is recomputed at every
#   step (cost grows with the square of the length).
# - **Static batching**: several prompts padded into one `generate` call share each
#   forward pass.
# - **Continuous batching** (vLLM, `transformers serve`): the server adds requests to
#   the running batch as they arrive and removes them as they finish; measured as the
#   throughput of concurrent requests against the same requests one by one.

# %%
tuned = models["tuned"]
prompts = [eval_examples[i % len(eval_examples)]["prompt"] for i in range(CONCURRENCY)]
rows = []
for use_cache in (True, False):
    _, tokens, seconds = generate(tuned, question, BENCH_TOKENS, use_cache=use_cache)
    rows.append({"what": f"KV cache {'on' if use_cache else 'off'}", "tokens": tokens,
                 "seconds": seconds})

tokenizer.padding_side = "left"  # generation continues from the right end of every row
texts = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False)
         for p in prompts]
one_by_one = [generate(tuned, p, BENCH_TOKENS) for p in prompts]
rows.append({"what": f"generate(): {len(prompts)} one by one", "tokens": sum(
    n for _, n, _ in one_by_one), "seconds": sum(s for _, _, s in one_by_one)})
batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
started = time.perf_counter()
with torch.no_grad():
    output = tuned.generate(**batch, max_new_tokens=BENCH_TOKENS, do_sample=False,
                            pad_token_id=tokenizer.eos_token_id)
rows.append({"what": f"generate(): {len(prompts)} in one batch", "tokens": int(
    (output[:, batch["input_ids"].shape[1]:] != tokenizer.eos_token_id).sum()),
    "seconds": time.perf_counter() - started})

sequential = [ask(p, BENCH_TOKENS) for p in prompts]
rows.append({"what": f"server: {len(prompts)} requests in turn", "tokens": sum(
    r["tokens"] for r in sequential), "seconds": sum(r["seconds"] for r in sequential)})
started = time.perf_counter()
with ThreadPoolExecutor(len(prompts)) as pool:
    together = list(pool.map(lambda p: ask(p, BENCH_TOKENS), prompts))
rows.append({"what": f"server: {len(prompts)} at once (continuous)", "tokens": sum(
    r["tokens"] for r in together), "seconds": time.perf_counter() - started})
speed = pd.DataFrame(rows)
speed["tokens/s"] = speed["tokens"] / speed["seconds"]
print(speed.round(2).to_string(index=False))

# %% [markdown]
# ## 8. Latency under concurrency: p50, p95, p99
#
# `N_REQUESTS` requests, `CONCURRENCY` in flight at a time, against the served model.
# Each request is also a trace (section 10). With a few requests the p99 is simply the
# slowest one: a real load test sends hundreds.

# %%
from agentcycle.observe import list_traces, setup_tracking, span

setup_tracking(settings)  # once, before the worker threads open spans


def traced_ask(index: int) -> dict:
    record = eval_records[index % len(eval_records)]
    with span("legal-chat", "LLM", inputs={"question": record["question"]}) as current:
        answer = ask(eval_examples[index % len(eval_examples)]["prompt"], BENCH_TOKENS)
        current.set_attributes({"gen_ai.response.model": "legal",
                                "gen_ai.usage.input_tokens": answer["prompt_tokens"],
                                "gen_ai.usage.output_tokens": answer["tokens"]})
        current.set_outputs({"answer": answer["text"]})
    return answer


started = time.perf_counter()
with ThreadPoolExecutor(CONCURRENCY) as pool:
    load = list(pool.map(traced_ask, range(N_REQUESTS)))
wall = time.perf_counter() - started
latencies_ms = sorted(r["seconds"] * 1000 for r in load)


def percentile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, math.ceil(q * len(values)) - 1)]


latency = {f"p{int(q * 100)}": percentile(latencies_ms, q) for q in (0.5, 0.95, 0.99)}
print(f"{N_REQUESTS} requests, {CONCURRENCY} concurrent, {wall:.1f} s: "
      f"{N_REQUESTS / wall:.2f} requests/s, "
      f"{sum(r['tokens'] for r in load) / wall:.1f} tokens/s")
print("  ".join(f"{k} {v:.0f} ms" for k, v in latency.items()))
plt.figure(figsize=(6, 2.8))
plt.hist(latencies_ms, bins=min(20, N_REQUESTS), color="tab:blue")
for (name, value), colour in zip(latency.items(), ("green", "orange", "red"), strict=True):
    plt.axvline(value, color=colour, linestyle="--", label=f"{name} {value:.0f} ms")
plt.title(f"latency, {CONCURRENCY} concurrent requests")
plt.xlabel("ms")
plt.ylabel("requests")
plt.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 9. A GPU Deployment on Kubernetes: probes and autoscaling
#
# The manifests below run the vLLM command of section 6 on a GPU node: the model on a
# PVC, the API key from a Secret by reference (never a value in the manifest),
# `nvidia.com/gpu` requested and limited, node affinity on the GPU memory label the
# platform's GPU feature discovery sets, a startup probe that allows minutes for the
# model to load, readiness and liveness on vLLM's `/health`, a Service, and a
# HorizontalPodAutoscaler on the queue length vLLM exports (`vllm:num_requests_waiting`,
# through the Prometheus adapter). They are validated offline against the upstream
# Kubernetes schemas with agentcycle's deploy validator (`kubernetes-validate`, strict;
# plus its secret scan), as agentcycle does for its fine-tune Job, whose manifest from
# `agentcycle.finetune.k8s` is validated alongside. **Applying them needs the platform's
# cluster (`kubectl apply -f`, or `agentcycle deploy` through Gitea and ArgoCD): not
# done here.**

# %%
import yaml

from agentcycle.deploy.validate import validate_manifests
from agentcycle.finetune.k8s import finetune_job_manifest, manifest_yaml

NAME, IMAGE = "legal-vllm", "vllm/vllm-openai:v0.10.1"
labels = {"app": NAME}
health = {"httpGet": {"path": "/health", "port": "http"}}
container = {
    "name": "vllm", "image": IMAGE,
    # The image's entrypoint is `vllm serve`; the model is its folder on the PVC.
    "args": ["/models/legal-tuned", *merged_vllm[3:], "--api-key", "$(VLLM_API_KEY)"],
    "ports": [{"name": "http", "containerPort": 8000}],
    "env": [{"name": "VLLM_API_KEY", "valueFrom": {"secretKeyRef": {
        "name": "legal-vllm-api", "key": "api-key"}}}],
    "resources": {"requests": {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": 1},
                  "limits": {"memory": "16Gi", "nvidia.com/gpu": 1}},
    "startupProbe": {**health, "periodSeconds": 10, "failureThreshold": 60},
    "readinessProbe": {**health, "periodSeconds": 5, "failureThreshold": 3},
    "livenessProbe": {**health, "periodSeconds": 20, "failureThreshold": 3},
    "volumeMounts": [{"name": "models", "mountPath": "/models", "readOnly": True}],
}
deployment = {
    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": NAME, "labels": labels},
    "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
        "metadata": {"labels": labels},
        "spec": {"containers": [container],
                 "priorityClassName": "thinkube-workload",
                 "imagePullSecrets": [{"name": "app-pull-secret"}],
                 "affinity": {"nodeAffinity": {
                     "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                         {"matchExpressions": [{"key": "nvidia.com/gpu.memory",
                                                "operator": "Gt", "values": ["8191"]}]}]}}},
                 "volumes": [{"name": "models", "persistentVolumeClaim": {
                     "claimName": "agentcycle-data", "readOnly": True}}]}}}}
service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": NAME, "labels": labels},
           "spec": {"selector": labels, "ports": [{"name": "http", "port": 80,
                                                   "targetPort": "http"}]}}
autoscaler = {
    "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
    "metadata": {"name": NAME},
    "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME},
             "minReplicas": 1, "maxReplicas": 3,
             "metrics": [{"type": "Pods", "pods": {
                 "metric": {"name": "vllm:num_requests_waiting"},
                 "target": {"type": "AverageValue", "averageValue": "5"}}}],
             "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}}}}
job = finetune_job_manifest(name="legal-tune", data="legal/train.jsonl",
                            out="models/legal-tuned", image="registry.example.com/thinkube/"
                            "agentcycle-gpu:0.4.0", finetune_args=["--max-steps", "200"],
                            register_as="legal")


def as_yaml(obj: dict) -> str:
    return manifest_yaml(json.loads(json.dumps(obj)))  # plain copies: no YAML anchors


manifests = {"deployment.yaml": as_yaml(deployment), "service.yaml": as_yaml(service),
             "hpa.yaml": as_yaml(autoscaler), "finetune-job.yaml": as_yaml(job)}
validate_manifests(manifests, kustomize=False)  # raises ManifestError naming the field
print("valid against the Kubernetes schemas (strict) and free of secret values:",
      ", ".join(manifests))
k8s_dir = WORK / "k8s"
k8s_dir.mkdir(exist_ok=True)
for file_name, text in manifests.items():
    (k8s_dir / file_name).write_text(text)
print(manifests["deployment.yaml"])

broken = copy.deepcopy(deployment)
broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pth"] = "/"
try:
    validate_manifests({"deployment.yaml": yaml.safe_dump(broken)}, kustomize=False)
except Exception as refused:  # a typo is caught before anything reaches a cluster
    print("a misspelt field:", refused)

# %% [markdown]
# ## 10. Production monitoring: traces
#
# Every request of section 8 opened a span (`agentcycle.observe.span`) with the GenAI
# attributes (model, input and output tokens). MLflow stores the traces (its embedded
# SQLite here, the platform's server with `MLFLOW_TRACKING_URI`); with `LANGFUSE_HOST`,
# `LANGFUSE_PUBLIC_KEY` and `LANGFUSE_SECRET_KEY` set, the same spans are exported to
# Langfuse too over OTLP, with no second instrumentation. What a dashboard shows per
# request (latency, tokens, cost) is read back below.

# %%
if settings.langfuse_enabled:
    print(f"traces: MLflow and Langfuse at {settings.langfuse_host} (OTLP dual export)")
else:
    print(f"traces: MLflow only, at {settings.tracking_uri} (set LANGFUSE_HOST, "
          "LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY to send them to Langfuse too)")
import mlflow

mlflow.flush_trace_async_logging()
traces = list_traces(settings, last=N_REQUESTS)
print(pd.DataFrame([{"time": t.time, "name": t.name, "ms": round(t.latency_ms),
                     "in": t.prompt_tokens, "out": t.completion_tokens,
                     "question": t.question[:30]} for t in traces[:6]]).to_string(index=False))
print(f"{len(traces)} traces; mean {statistics.fmean(t.latency_ms for t in traces):.0f} ms, "
      f"{sum(t.completion_tokens for t in traces)} tokens out")

# %% [markdown]
# ## 11. The MLflow registry: `@champion` moves only when the gate passes
#
# `register_model` stores the model as run artifacts and only then creates a version,
# tagged with its eval metrics and data lineage (training file and its sha256, base,
# method). `promote` moves the alias only when every gate passed, else it raises
# `PromotionRefused` naming the failed gates and leaves the alias where it was. A
# production gate (accuracy >= 0.8) is far above what a few CPU steps reach; a
# no-regression gate (no worse than the base on these questions) is checked second.
# `agentcycle serve models:/legal-notebook@champion` then serves whatever passed.

# %%
from agentcycle.evals.gates import check_gates
from agentcycle.finetune import promote, register_model
from agentcycle.finetune.registry import PromotionRefused, data_lineage, list_versions

MODEL_NAME = "legal-notebook"
registered_metrics = {**{k.replace("/", "_per_"): v for k, v in metrics["tuned"].items()},
                      "p95_latency_ms": latency["p95"]}
version = register_model(TUNED_DIR, MODEL_NAME, run_id=result.run_id, metrics=registered_metrics,
                         lineage={**data_lineage(train_path), "base_model": BASE_DIR.name,
                                  "method": result.method}, settings=settings)
print(f"registered {version.uri}; tags: " + ", ".join(
    f"{k}={v[:12]}" for k, v in sorted(version.tags.items())[:6]))

gates = {
    "production": ["accuracy>=0.8"],
    "no regression": [f"accuracy>={metrics['base']['accuracy']:.4f}",
                      f"perplexity<={metrics['base']['perplexity']:.4f}"],
}
promoted = False
for label, gate_list in gates.items():
    results = check_gates(registered_metrics, gate_list)
    try:
        promote(MODEL_NAME, version.version, results, settings=settings)
        promoted = True
        print(f"{label} gate passed: @champion -> v{version.version}")
    except PromotionRefused as refused:
        print(f"{label} gate: {refused}")
current = list_versions(MODEL_NAME, settings)
print(pd.DataFrame([{"version": v.version, "aliases": ",".join(v.aliases) or "-",
                     "accuracy": v.tags.get("metric.accuracy", "?")[:6]}
                    for v in current]).to_string(index=False))

# %% [markdown]
# ## 12. Deployment checklist
#
# Each line is computed from what this notebook measured or produced, so it is only as
# green as the run behind it.

# %%
checklist = [
    ("no worse than the base (gate passed, @champion)", promoted),
    ("quantised variant within 5% perplexity", any(
        row["variant"] != "fp32" and row["perplexity"] <= quantised[0]["perplexity"] * 1.05
        for row in quantised)),
    ("GGUF exported" + (", logits round trip checked" if gguf.check else
                        " (round trip not checked: VERIFY_GGUF)"), gguf.path.is_file()),
    ("model card written", (TUNED_DIR / "README.md").is_file()),
    ("served through the OpenAI API with a key", all(r["tokens"] > 0 for r in load)),
    ("p95 latency under 5 s on this machine", latency["p95"] < 5000),
    ("manifests valid; secrets by reference", True),  # validate_manifests raised otherwise
    ("traces recorded", len(traces) >= N_REQUESTS),
    ("registered with lineage; @champion gated",
     bool(version.tags.get("agentcycle.data.sha256"))),
    ("applied to a cluster (platform only)", False),
]
for item, done in checklist:
    print(f"[{'x' if done else ' '}] {item}")
print(f"\n{sum(done for _, done in checklist)} of {len(checklist)} done")

# %% [markdown]
# ## What changes on the platform, and clean up
#
# - A GPU: `agentcycle serve` runs vLLM (the arguments of section 6) and bitsandbytes'
#   4-bit kernels are fast; the same measurements then show real serving throughput.
# - A bigger base (1-8B) and the full profile make the quality gate meaningful.
# - `kubectl apply -f eval-deploy/k8s/` (or `agentcycle deploy`) on the cluster;
#   `LANGFUSE_*` for the dashboards; `MLFLOW_TRACKING_URI` for the shared registry.

# %%
stack.close()  # stops the model server
print("closed")
