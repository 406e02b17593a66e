"""Length groups against one padded block per batch, side by side in one run.

The fast loop (``finetune/_fast.py``) runs a batch's shared prefix once and its
suffixes right-padded. Padded to the batch's longest, a tool call's suffix (~300
tokens) pays for the answer after a search result (~800). In length groups, each group
pads to its own longest. Same batches, same loss; this measures the tokens computed and
the seconds, for the frozen layers' cache and for training steps.

    .venv/bin/python benchmarks/finetune_padding.py [--rag 96] [--tools 48] [--steps 6]

It first counts the tokens each way on the whole default demo recipe (2 wordings per
fact, 128 tool records), then times both ways on a slice of it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def demo_examples() -> tuple[list[dict], list[dict]]:
    """The default demo recipe's training examples, seed 7: (RAG, tool use)."""
    from agentcycle.demo import DemoOptions, legal_tool_records_path
    from agentcycle.examples import legal_split
    from agentcycle.examples.legal import ensure_legal_collection
    from agentcycle.finetune import read_jsonl, to_examples
    from agentcycle.finetune.dataprep import (
        called_tool,
        sample_per_fact,
        sample_spread,
        with_answer_form,
    )
    from agentcycle.models import embedding_model_dir
    from agentcycle.rag import Embedder
    from agentcycle.rag.retriever import Retriever
    from agentcycle.settings import Settings

    options = DemoOptions()
    settings = Settings(home=Path(tempfile.mkdtemp(prefix="ft-padding-")))
    embedder = Embedder(embedding_model_dir(settings))
    store = ensure_legal_collection(settings, embedder=embedder)

    retrieve = Retriever(store, embedder, options.top_k, options.keep_sentences)
    records = with_answer_form(sample_per_fact(read_jsonl(legal_split("train")),
                                               options.wordings_per_fact, seed=7), "quote")
    tools = sample_spread(read_jsonl(legal_tool_records_path()), options.tool_records,
                          called_tool, seed=7)
    return (to_examples(records, legal_split("train"), retrieve=retrieve),
            to_examples(tools, legal_tool_records_path()))


def computed_tokens(batches) -> int:
    return sum((0 if b.prefix is None else b.prefix.shape[1])
               + sum(h.shape[0] * h.shape[1] for h, _ in b.groups) for b in batches)


def count(tokenized, batch_size: int, slack: float) -> tuple[int, int]:
    """(real tokens, tokens computed) of one pass, without running the model."""
    from agentcycle.finetune._fast import batch_plan

    real = computed = 0
    for batch, shared, groups in batch_plan(tokenized, batch_size, slack):
        real += sum(len(e) for e in batch)
        computed += shared + sum(len(group) * (max(len(e) for e in group) - shared)
                                 for group in groups)
    return real, computed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rag", type=int, default=96)
    parser.add_argument("--tools", type=int, default=48, help="tool-use examples")
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agentcycle.demo import TRAIN_MAX_LENGTH, default_params
    from agentcycle.finetune import _fast as fast
    from agentcycle.finetune.tokenize import tokenize_examples
    from agentcycle.models import chat_model_dir

    params = default_params()
    base = chat_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(base)
    rag, tools = demo_examples()
    whole = tokenize_examples(tokenizer, rag + tools, TRAIN_MAX_LENGTH)
    real, padded = count(whole, params.batch_size, float("inf"))
    _, grouped = count(whole, params.batch_size, fast.PADDING_SLACK)
    print(f"default demo recipe, {len(whole)} examples, one pass: {real:,} real tokens; "
          f"computed {padded:,} padded per batch, {grouped:,} in length groups "
          f"({grouped / padded:.2f}x)")

    sliced = tokenize_examples(tokenizer, rag[:args.rag] + tools[:args.tools], TRAIN_MAX_LENGTH)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    split = model.config.num_hidden_layers - params.top_layers
    model = fast._with_lora(model, params, range(split, model.config.num_hidden_layers))
    decoder = model.get_base_model().model
    rows = []
    for name, slack in (("padded per batch", float("inf")), ("length groups", fast.PADDING_SLACK)):
        started = time.perf_counter()
        batches = fast._cache_lower_layers(decoder, sliced, split, params.batch_size, 0, slack)
        cached = time.perf_counter() - started
        # the same batches, in the same order, both ways: the longest (tool use) first
        chosen = sorted(range(len(batches)), key=lambda i: -computed_tokens([batches[i]]))
        started = time.perf_counter()
        for index in chosen[:args.steps]:
            loss = fast._loss(model, decoder, batches[index], split)
            loss.backward()
            model.zero_grad(set_to_none=True)
        steps = time.perf_counter() - started
        rows.append((name, computed_tokens(batches), cached, steps))
    print(f"slice: {len(sliced)} examples ({args.rag} RAG, {args.tools} tool use), "
          f"{args.steps} training steps on the longest batches")
    print(f"{'':18} {'tokens':>9} {'cache s':>8} {'steps s':>8}")
    for name, tokens, cached, steps in rows:
        print(f"{name:18} {tokens:>9,} {cached:>8.1f} {steps:>8.1f}")
    (_, t0, c0, s0), (_, t1, c1, s1) = rows
    print(f"ratio (padded / groups): tokens {t0 / t1:.2f}x, cache {c0 / c1:.2f}x, "
          f"steps {s0 / s1:.2f}x")


if __name__ == "__main__":
    main()
