"""Training throughput and memory, side by side in one run, on the same data and hardware:

- ``trl-defaults``: TRL's SFTTrainer with its default SFTConfig (gradient checkpointing
  on) and LoRA on every layer, the way its docs start a user;
- ``lora-trl``: our TRL recipe (LoRA on the top layers, no gradient checkpointing);
- ``lora``: our fast loop (frozen lower layers computed once, logits on answer tokens
  only, shared prefixes once per batch);
- ``qlora``: the same LoRA on a 4-bit NF4 base (bitsandbytes), for its memory.

Each method runs in its own process (peak RSS is per process). Tokens/s counts the real
(non-padding) tokens of the examples times the epochs, over the whole training call.

    .venv/bin/python benchmarks/finetune_speed.py [--rag 24] [--tools 8] [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METHODS = ["trl-defaults", "lora-trl", "lora", "qlora"]


def examples(rag: int, tools: int) -> list[dict]:
    from agentcycle.examples import legal_split
    from agentcycle.examples.legal import ensure_legal_collection
    from agentcycle.finetune import read_jsonl, to_examples
    from agentcycle.finetune.dataprep import sample_per_fact
    from agentcycle.models import embedding_model_dir
    from agentcycle.rag import Embedder
    from agentcycle.settings import Settings

    settings = Settings(home=Path(tempfile.mkdtemp(prefix="ft-speed-")))
    embedder = Embedder(embedding_model_dir(settings))
    store = ensure_legal_collection(settings, embedder=embedder)
    records = sample_per_fact(read_jsonl(legal_split("train")), 1, seed=7)[:rag]
    chosen = to_examples(records, "train",
                         retrieve=lambda q: store.search(embedder.embed([q])[0], 1))
    tool_file = legal_split("train").parent.parent / "tooluse" / "train.jsonl"
    return chosen + to_examples(read_jsonl(tool_file)[:tools], tool_file)


def child(method: str, data: Path, epochs: float) -> None:
    from agentcycle.demo import TRAIN_MAX_LENGTH
    from agentcycle.finetune import TrainParams
    from agentcycle.finetune.methods import get_method
    from agentcycle.finetune.tokenize import tokenize_examples
    from agentcycle.models import chat_model_dir

    chosen = json.loads(data.read_text())
    base = chat_model_dir()
    params = TrainParams(epochs=epochs, learning_rate=2e-3, top_layers=8, batch_size=8,
                         max_length=TRAIN_MAX_LENGTH, save_steps=0)
    from transformers import AutoTokenizer

    tokens = sum(len(t) for t in tokenize_examples(AutoTokenizer.from_pretrained(base),
                                                   chosen, TRAIN_MAX_LENGTH)) * epochs
    work = Path(tempfile.mkdtemp(prefix=f"ft-{method}-"))
    started = time.perf_counter()
    if method == "trl-defaults":
        losses = _trl_defaults(chosen, base, work, params)
    else:
        out = get_method(method)(chosen, base, work, params, None, False)
        losses = out.losses
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"method": method, "seconds": seconds, "tokens": tokens,
                      "peak_rss_mb": peak, "final_loss": losses[-1][1] if losses else None}))


def _trl_defaults(chosen, base, work, params):
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    losses = []

    class Record(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                losses.append((state.global_step, float(logs["loss"])))

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = SFTConfig(output_dir=str(work), num_train_epochs=params.epochs,
                       per_device_train_batch_size=params.batch_size,
                       learning_rate=params.learning_rate, max_length=params.max_length,
                       report_to="none", save_strategy="no", logging_steps=1,
                       disable_tqdm=True, use_cpu=True)
    lora = LoraConfig(r=params.rank, lora_alpha=params.alpha, task_type="CAUSAL_LM",
                      target_modules=list(params.target_modules))
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(chosen),
                         processing_class=AutoTokenizer.from_pretrained(base),
                         peft_config=lora, callbacks=[Record()])
    trainer.train()
    return losses


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rag", type=int, default=24)
    parser.add_argument("--tools", type=int, default=8)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--child", default=None)
    parser.add_argument("--data", type=Path, default=None)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.data, args.epochs)
        return
    data = Path(tempfile.mkdtemp(prefix="ft-speed-")) / "examples.json"
    chosen = examples(args.rag, args.tools)
    data.write_text(json.dumps(chosen))
    print(f"{len(chosen)} examples ({args.rag} RAG pairs, {args.tools} tool records), "
          f"{args.epochs} epochs, batch 8, LoRA r=16", flush=True)
    results = []
    for method in args.methods.split(","):
        done = subprocess.run([sys.executable, __file__, "--child", method, "--data", str(data),
                               "--epochs", str(args.epochs)], capture_output=True, text=True)
        line = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
        if done.returncode or not line:
            print(f"{method}: failed\n{done.stderr[-2000:]}", flush=True)
            continue
        results.append(json.loads(line[-1]))
        r = results[-1]
        print(f"{method:13} {r['seconds']:7.1f} s {r['tokens'] / r['seconds']:8.0f} tok/s "
              f"peak RSS {r['peak_rss_mb']:6.0f} MiB final loss {r['final_loss']:.3f}",
              flush=True)
    by = {r["method"]: r for r in results}
    speed = {m: r["tokens"] / r["seconds"] for m, r in by.items()}
    for other in ("trl-defaults", "lora-trl"):
        if "lora" in speed and other in speed:
            print(f"lora (fast) vs {other}: {speed['lora'] / speed[other]:.2f}x tokens/s")
    if "qlora" in by and "lora-trl" in by:
        print(f"qlora vs lora-trl peak RSS: "
              f"{by['qlora']['peak_rss_mb'] / by['lora-trl']['peak_rss_mb']:.2f}x")


if __name__ == "__main__":
    main()
