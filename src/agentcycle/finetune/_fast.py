"""A fast LoRA SFT loop for CPUs: frozen lower layers computed once, logits on answers.

With LoRA on the top ``K`` decoder layers only, the lower layers are frozen and their
output for an example never changes: we compute it once (no grad, bf16) and every
epoch starts from that cache, so an epoch costs K layers forward and backward instead
of the whole model. The loss needs logits only where a label is set (the answer
tokens), so the vocabulary projection (49K x 576 on SmolLM2, the size of ~4 layers)
runs on ~30 positions per example instead of all ~300.

Shared prefixes are computed once per batch, not once per example. Examples are sorted
by their tokens, so a batch holds examples that start alike (the six tool schemas of
a tool-use prompt, ~1,300 tokens; the system prompt and passage shared by paraphrases of
one fact); the batch's common prefix runs once, its keys and values are broadcast to
every example, and only the rest (question and answer) runs per example. Gradients
flow through the shared prefix as through separate copies. Suffixes are right-padded:
under a causal mask no real token attends to padding, so no padding mask is needed.
They run in groups of similar length, each padded to its own longest: a tool call's
suffix (~300 tokens) and the answer after a search result (~800) would otherwise pad
to the same width. The batch, its loss and its gradient are the same; the padding the
demo's data computed fell by a third.

The adapter it trains is an ordinary PEFT LoRA adapter: saved, merged and served like
the one TRL's SFTTrainer writes (method ``lora-trl``, the baseline it is measured against
in benchmarks/finetune_speed.py).
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentcycle.errors import ConfigError
from agentcycle.finetune.tokenize import IGNORE_INDEX, TokenizedExample, tokenize_examples

StepCallback = Callable[[int, int, float | None], None]
_CHECKPOINT = "fast-checkpoint.pt"


@dataclass
class FastOutput:
    model: Any  # the PeftModel, adapter not merged
    tokenizer: Any
    losses: list[tuple[int, float]]
    steps: int
    tokens: int  # real (non-padding) tokens trained on, summed over epochs
    seconds: float
    resumed_from: int = 0


# A new length group starts where padding to the next suffix would add more than this
# share of the group's real tokens.
PADDING_SLACK = 0.15


@dataclass
class _Batch:
    prefix: Any  # [1, P, H] bf16: the shared prefix after the frozen layers (P may be 0)
    # Each group of suffixes of similar length: ([b, S, H] bf16 after the frozen layers,
    # [b, S] long labels), right-padded to the group's longest.
    groups: list[tuple[Any, Any]]
    tokens: int  # real tokens the batch stands for (prefix counted once per example)


def train_lora_fast(examples: list[dict], base_model_dir: str | Path, params: Any, *,
                    work_dir: Path | None = None, resume: bool = False, save_steps: int = 0,
                    on_step: StepCallback | None = None,
                    on_loss: Callable[[int, float], None] | None = None) -> FastOutput:
    """Train a LoRA adapter on ``examples`` (prompt/completion pairs); see the module doc."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    torch.manual_seed(params.seed)
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    tokenized = tokenize_examples(tokenizer, examples, params.max_length)
    model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
    layers = model.config.num_hidden_layers
    split = layers - min(params.top_layers or layers, layers)
    model = _with_lora(model, params, range(split, layers))
    decoder = model.get_base_model().model
    batches = _cache_lower_layers(decoder, tokenized, split, params.batch_size,
                                  tokenizer.pad_token_id or 0)
    total = _total_steps(params, len(batches))
    schedule = _batch_schedule(len(batches), total, params.seed)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=params.learning_rate, weight_decay=0.0)
    scheduler = _cosine(optimizer, total)
    losses: list[tuple[int, float]] = []
    start = 0
    checkpoint = work_dir / _CHECKPOINT if work_dir else None
    if resume and checkpoint and checkpoint.exists():
        start = _load_checkpoint(checkpoint, model, optimizer, scheduler, losses,
                                 _identity(base_model_dir, params, len(examples)))
    model.train()
    tokens = 0
    for step in range(start, total):
        batch = batches[schedule[step]]
        loss = _step(model, decoder, batch, split, trainable, optimizer, scheduler)
        tokens += batch.tokens
        losses.append((step + 1, loss))
        if on_loss:
            on_loss(step + 1, loss)
        if on_step:
            on_step(step + 1, total, loss)
        if checkpoint and save_steps and (step + 1) % save_steps == 0 and step + 1 < total:
            _save_checkpoint(checkpoint, model, optimizer, scheduler, step + 1, losses,
                             _identity(base_model_dir, params, len(examples)))
    model.eval()
    return FastOutput(model=model, tokenizer=tokenizer, losses=losses, steps=total,
                      tokens=tokens, seconds=time.perf_counter() - started, resumed_from=start)


def _with_lora(model, params, layer_ids):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=params.rank, lora_alpha=params.alpha, lora_dropout=params.dropout,
                        target_modules=list(params.target_modules), task_type="CAUSAL_LM",
                        layers_to_transform=list(layer_ids))
    return get_peft_model(model, config)


def _autocast():
    import torch

    from agentcycle._hardware import native_bf16

    return torch.autocast("cpu", dtype=torch.bfloat16) if native_bf16() else nullcontext()


def _run_layers(decoder, hidden, layer_range, *, start: int = 0, cache=None):
    """Run decoder layers ``layer_range`` on ``hidden`` (positions from ``start``), under a
    causal mask that also sees the ``start`` positions already in ``cache``."""
    import torch

    length = hidden.shape[1]
    positions = torch.arange(start, start + length).unsqueeze(0)
    # None lets SDPA use its own causal kernel; after a prefix the mask must say that
    # every position sees the whole prefix.
    mask = (torch.ones(length, start + length, dtype=torch.bool).tril(diagonal=start)
            [None, None] if start else None)
    rotary = decoder.rotary_emb(hidden, position_ids=positions)
    for index in layer_range:
        hidden = decoder.layers[index](hidden, attention_mask=mask, position_embeddings=rotary,
                                       position_ids=positions, cache=cache,
                                       use_cache=cache is not None)
    return hidden


def _run_batch(decoder, prefix, groups: list, layer_range) -> tuple[Any, list]:
    """Run a batch through ``layer_range``: the shared prefix once (``None`` or length 0:
    none), then each group of suffixes on the prefix's keys and values. Returns the
    prefix's output and each group's."""
    from transformers import DynamicCache

    if prefix is None or prefix.shape[1] == 0:
        return None, [_run_layers(decoder, hidden, layer_range) for hidden in groups]
    cache = DynamicCache(config=decoder.config)
    output = _run_layers(decoder, prefix, layer_range, cache=cache)
    shared = [(cache.layers[i].keys, cache.layers[i].values) for i in layer_range]
    outputs = []
    for hidden in groups:
        group_cache, size = DynamicCache(config=decoder.config), hidden.shape[0]
        for index, (keys, values) in zip(layer_range, shared, strict=True):
            group_cache.update(keys.expand(size, -1, -1, -1), values.expand(size, -1, -1, -1),
                               index)
        outputs.append(_run_layers(decoder, hidden, layer_range, start=prefix.shape[1],
                                   cache=group_cache))
    return output, outputs


def _length_groups(lengths: list[int], slack: float = PADDING_SLACK) -> list[list[int]]:
    """Indices of ``lengths`` in groups of similar length (see PADDING_SLACK)."""
    groups: list[list[int]] = []
    real = 0
    for index in sorted(range(len(lengths)), key=lengths.__getitem__):
        group = groups[-1] if groups else None
        if group and lengths[index] * (len(group) + 1) <= (1 + slack) * (real + lengths[index]):
            group.append(index)
            real += lengths[index]
        else:
            groups.append([index])
            real = lengths[index]
    return groups


def _common_prefix(group: list[TokenizedExample]) -> int:
    """Tokens every example of ``group`` shares at the start, none of them labelled, and
    at least one prompt token left per example (it predicts the first answer token)."""
    first = group[0]
    limit = min(len(e) for e in group) - 1
    for example in group:
        labelled = next(i for i, label in enumerate(example.labels) if label != IGNORE_INDEX)
        limit = min(limit, labelled - 1)
    length = 0
    while length < limit and all(e.input_ids[length] == first.input_ids[length]
                                 for e in group[1:]):
        length += 1
    return max(length, 0)


def _padded(rows: list[list[int]], fill: int):
    import torch

    width = max(len(row) for row in rows)
    return torch.tensor([row + [fill] * (width - len(row)) for row in rows])


def batch_plan(tokenized: list[TokenizedExample], batch_size: int,
               slack: float = PADDING_SLACK):
    """Batches of examples that start alike, as the loop runs them: for each, (its
    examples, the length of their shared prefix, its suffixes' length groups)."""
    order = sorted(range(len(tokenized)), key=lambda i: tokenized[i].input_ids)
    for begin in range(0, len(order), batch_size):
        batch = [tokenized[i] for i in order[begin:begin + batch_size]]
        shared = _common_prefix(batch)
        groups = [[batch[i] for i in indices]
                  for indices in _length_groups([len(e) - shared for e in batch], slack)]
        yield batch, shared, groups


def _cache_lower_layers(decoder, tokenized: list[TokenizedExample], split: int,
                        batch_size: int, pad_id: int,
                        slack: float = PADDING_SLACK) -> list[_Batch]:
    """Batches of examples that start alike, the frozen layers' output computed once."""
    import torch

    batches = []
    for batch, shared, groups in batch_plan(tokenized, batch_size, slack):
        ids = [_padded([e.input_ids[shared:] for e in group], pad_id) for group in groups]
        labels = [_padded([e.labels[shared:] for e in group], IGNORE_INDEX)
                  for group in groups]
        with torch.no_grad(), _autocast():
            embedded = (decoder.embed_tokens(torch.tensor([batch[0].input_ids[:shared]]))
                        if shared else None)
            prefix, hidden = _run_batch(decoder, embedded,
                                        [decoder.embed_tokens(i) for i in ids], range(split))
        batches.append(_Batch(prefix=None if prefix is None else prefix.to(torch.bfloat16),
                              groups=[(h.to(torch.bfloat16), label)
                                      for h, label in zip(hidden, labels, strict=True)],
                              tokens=sum(len(e) for e in batch)))
    return batches


def _loss(model, decoder, batch: _Batch, split: int):
    """Mean cross-entropy over the batch's answer tokens, through the trained layers."""
    import torch
    import torch.nn.functional as F

    top = range(split, len(decoder.layers))
    logits, targets = [], []
    with _autocast():
        prefix = None if batch.prefix is None else batch.prefix.float()
        _, outputs = _run_batch(decoder, prefix, [h.float() for h, _ in batch.groups], top)
        for hidden, (_, labels) in zip(outputs, batch.groups, strict=True):
            target = labels[:, 1:]
            keep = target != IGNORE_INDEX
            logits.append(model.get_base_model().lm_head(decoder.norm(hidden)[:, :-1][keep]))
            targets.append(target[keep])
    return F.cross_entropy(torch.cat(logits).float(), torch.cat(targets))


def _step(model, decoder, batch: _Batch, split: int, trainable, optimizer, scheduler) -> float:
    import torch

    loss = _loss(model, decoder, batch, split)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(trainable, 1.0)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def _total_steps(params, batches: int) -> int:
    if params.max_steps and params.max_steps > 0:
        return params.max_steps
    return max(1, math.ceil(params.epochs * batches))


def _batch_schedule(batches: int, total: int, seed: int) -> list[int]:
    """Every epoch visits every batch once, in a seeded order: a resumed run replays it."""
    rng = random.Random(seed)
    schedule: list[int] = []
    while len(schedule) < total:
        epoch = list(range(batches))
        rng.shuffle(epoch)
        schedule.extend(epoch)
    return schedule[:total]


def _cosine(optimizer, total: int):
    from transformers import get_cosine_schedule_with_warmup

    return get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=min(2, total // 10),
                                           num_training_steps=total)


def _identity(base_model_dir, params, examples: int) -> dict:
    """What a checkpoint must match to be resumed: same base, data size and recipe."""
    return {"base_model": str(Path(base_model_dir).resolve()), "examples": examples,
            "rank": params.rank, "top_layers": params.top_layers, "seed": params.seed,
            "batch_size": params.batch_size, "learning_rate": params.learning_rate,
            "epochs": params.epochs, "max_steps": params.max_steps}


def _save_checkpoint(path: Path, model, optimizer, scheduler, step: int, losses, identity):
    import torch
    from peft import get_peft_model_state_dict

    state = {"identity": identity, "step": step, "losses": list(losses),
             "adapter": get_peft_model_state_dict(model), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict()}
    partial = path.with_suffix(".tmp")
    torch.save(state, partial)
    os.replace(partial, path)  # a kill mid-save leaves the previous checkpoint intact


def _load_checkpoint(path: Path, model, optimizer, scheduler, losses, identity) -> int:
    import torch
    from peft import set_peft_model_state_dict

    state = torch.load(path, weights_only=False)
    changed = {k: (state["identity"].get(k), v) for k, v in identity.items()
               if state["identity"].get(k) != v}
    if changed:
        names = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changed.items())
        raise ConfigError(f"cannot resume from {path}: the run differs ({names}); "
                          "start without --resume")
    set_peft_model_state_dict(model, state["adapter"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    losses.extend(state["losses"])
    return int(state["step"])
