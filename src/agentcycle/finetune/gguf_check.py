"""Round-trip check of an exported GGUF: load it back with transformers (``gguf_file=``)
and compare its logits with the source model's on a few chat prompts.

Tolerances, measured on the bundled SmolLM2-135M (4 prompts, 147 positions): f16 moves
a logit by at most 0.041 (mean 0.006), argmax agreement 100%; Q8_0 (8-bit blocks of 32,
its tensors byte-identical to llama.cpp's convert_hf_to_gguf.py output) by at most 1.32
(mean ~0.1), agreement 95.9%. The bounds leave ~2x headroom over that; a file with the
Q/K permutation left out is far outside both (see tests/test_export.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from agentcycle.errors import ModelError

PROMPTS = (
    "What is a contract?",
    "Write one sentence about the sea.",
    "List three prime numbers.",
    "Explain what a tenant must do before moving out.",
)
# max |logit difference| allowed, and the least share of positions whose argmax agrees
TOLERANCE = {"f16": (0.1, 0.99), "q8_0": (2.5, 0.90)}


@dataclass
class RoundTrip:
    type: str
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float
    positions: int
    tokenizer_matches: bool
    tolerance: tuple[float, float] = field(default=(0.0, 1.0))

    @property
    def ok(self) -> bool:
        max_diff, agreement = self.tolerance
        return (self.tokenizer_matches and self.max_abs_diff <= max_diff
                and self.top1_agreement >= agreement)

    def as_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def check_round_trip(model_dir: Path, gguf_path: Path, type: str,
                     prompts: tuple[str, ...] = PROMPTS) -> RoundTrip:
    """Compare the GGUF, as transformers loads it, with the source model; raise
    ModelError when it is outside the tolerance for its type."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source_tok = AutoTokenizer.from_pretrained(model_dir)
    source = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    try:
        gguf_tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        exported = AutoModelForCausalLM.from_pretrained(
            gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32).eval()
    except Exception as exc:  # noqa: BLE001 -- any load failure means a broken file
        raise ModelError(f"{gguf_path} does not load back with transformers: {exc}") from None
    diffs, agree, positions, same_tokens = [], 0, 0, True
    with torch.no_grad():
        for prompt in prompts:
            ids = source_tok.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True,
                return_tensors="pt", return_dict=True)["input_ids"]
            text = source_tok.decode(ids[0])
            same_tokens &= gguf_tok(text, add_special_tokens=False)["input_ids"] == \
                source_tok(text, add_special_tokens=False)["input_ids"]
            ours, theirs = source(ids).logits[0], exported(ids).logits[0]
            diffs.append((ours - theirs).abs())
            agree += int((ours.argmax(-1) == theirs.argmax(-1)).sum())
            positions += ids.shape[1]
    every = torch.cat([d.flatten() for d in diffs])
    result = RoundTrip(type=type, max_abs_diff=float(every.max()),
                       mean_abs_diff=float(every.mean()), top1_agreement=agree / positions,
                       positions=positions, tokenizer_matches=bool(same_tokens),
                       tolerance=TOLERANCE[type])
    if not result.ok:
        raise ModelError(
            f"{gguf_path.name} differs from {model_dir.name} beyond the {type} tolerance: "
            f"max |logit diff| {result.max_abs_diff:.3f} (allowed {result.tolerance[0]}), "
            f"top-1 agreement {result.top1_agreement:.1%} (needed {result.tolerance[1]:.0%})"
            + ("" if result.tokenizer_matches else ", tokenizer differs"))
    return result
