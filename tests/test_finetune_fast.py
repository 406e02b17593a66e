"""The label mask and the fast LoRA loop, on the bundled model."""

from __future__ import annotations

import pytest
import torch

from agentcycle._hardware import native_bf16
from agentcycle.errors import ConfigError, DataError
from agentcycle.finetune import LoraParams
from agentcycle.finetune import _fast as fast
from agentcycle.finetune.tokenize import IGNORE_INDEX, tokenize_example, tokenize_examples
from agentcycle.models import chat_model_dir

EXAMPLES = [
    {"prompt": [{"role": "system", "content": "Answer from the Act."},
                {"role": "user", "content": f"Question {i}: how many days' notice?"}],
     "completion": [{"role": "assistant", "content": f"{10 + i} days' notice (§ {i})."}]}
    for i in range(6)
]


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(chat_model_dir())


def test_only_the_answer_and_its_end_marker_are_labelled(tokenizer):
    tokenized = tokenize_example(tokenizer, EXAMPLES[0], 512)
    answer = [t for t, label in zip(tokenized.input_ids, tokenized.labels, strict=True)
              if label != IGNORE_INDEX]
    assert tokenizer.decode(answer) == "10 days' notice (§ 0).<|im_end|>\n"
    assert tokenized.answer_tokens == len(answer) < len(tokenized)


def test_no_answer_left_after_truncation_is_a_clear_error(tokenizer):
    with pytest.raises(DataError, match="example 1: no answer tokens left after truncation"):
        tokenize_examples(tokenizer, EXAMPLES[:1], max_length=8)


def test_a_template_without_assistant_marker_is_refused(tokenizer):
    class Plain:  # a template that renders only the contents: nothing to split on
        chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"

        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            return "".join(m["content"] for m in messages)

        def __call__(self, text, add_special_tokens):
            return tokenizer(text, add_special_tokens=add_special_tokens)

    no_template = type("NoTemplate", (), {"chat_template": None})()
    with pytest.raises(DataError, match="no chat template"):
        tokenize_example(no_template, EXAMPLES[0], 512)
    prefix_only = dict(EXAMPLES[0], completion=[{"role": "assistant", "content": ""}])
    with pytest.raises(DataError, match="no assistant marker"):
        tokenize_example(Plain(), prefix_only, 512)


def test_suffixes_are_grouped_by_length_so_little_padding_is_computed():
    assert fast._length_groups([100, 300, 105, 310, 1000]) == [[0, 2], [1, 3], [4]]
    assert fast._length_groups([100, 300, 1000], slack=float("inf")) == [[0, 1, 2]]


@pytest.mark.slow
def test_a_batch_of_short_and_long_suffixes_gives_the_same_loss_in_length_groups():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = chat_model_dir()
    tok = AutoTokenizer.from_pretrained(model_dir)
    long = {"prompt": [EXAMPLES[0]["prompt"][0],
                       {"role": "user", "content": "Question 9: " + "and then? " * 40}],
            "completion": [{"role": "assistant", "content": "19 days' notice (§ 9)."}]}
    tokenized = tokenize_examples(tok, [EXAMPLES[0], long], 512)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with torch.no_grad():
        reference = [model(input_ids=torch.tensor([t.input_ids]),
                           labels=torch.tensor([t.labels])).loss.item() for t in tokenized]
    counts = [t.answer_tokens for t in tokenized]
    weighted = sum(r * n for r, n in zip(reference, counts, strict=True)) / sum(counts)
    model = fast._with_lora(model, LoraParams(top_layers=4), range(26, 30))
    decoder = model.get_base_model().model
    tolerance = 3e-2 if native_bf16() else 2e-3
    with torch.no_grad():
        (grouped,) = fast._cache_lower_layers(decoder, tokenized, 26, 2, 0)
        (padded,) = fast._cache_lower_layers(decoder, tokenized, 26, 2, 0, slack=float("inf"))
        assert grouped.prefix.shape[1] > 0, "the system prompt runs once"
        assert [g[0].shape[0] for g in grouped.groups] == [1, 1]
        assert len(padded.groups) == 1 and padded.groups[0][0].shape[0] == 2
        for batch in (grouped, padded):
            assert fast._loss(model, decoder, batch, 26).item() == pytest.approx(
                weighted, abs=tolerance)


@pytest.mark.slow
def test_cached_lower_layers_give_the_models_own_loss_and_training_lowers_it(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = chat_model_dir()
    tok = AutoTokenizer.from_pretrained(model_dir)
    tokenized = tokenize_examples(tok, EXAMPLES[:2], 512)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with torch.no_grad():
        reference = [model(input_ids=torch.tensor([t.input_ids]),
                           labels=torch.tensor([t.labels])).loss.item() for t in tokenized]
    params = LoraParams(top_layers=4)
    model = fast._with_lora(model, params, range(26, 30))
    decoder = model.get_base_model().model
    # One at a time (the prompt is the shared prefix), and both in one batch (their
    # common system prompt is): each way, the model's own loss.
    order = sorted(range(2), key=lambda i: tokenized[i].input_ids)
    # The cache is bf16; where the CPU has native bf16 the trained layers run under bf16
    # autocast too (0.7% off the fp32 reference on an AVX512-BF16 EPYC).
    tolerance = 3e-2 if native_bf16() else 2e-3
    with torch.no_grad():
        for batch, index in zip(fast._cache_lower_layers(decoder, tokenized, 26, 1, 0), order,
                                strict=True):
            assert batch.prefix.shape[1] > 0
            loss = fast._loss(model, decoder, batch, 26).item()
            assert loss == pytest.approx(reference[index], abs=tolerance)
        (both,) = fast._cache_lower_layers(decoder, tokenized, 26, 2, 0)
        counts = [t.answer_tokens for t in tokenized]  # the mean over every answer token
        weighted = sum(r * n for r, n in zip(reference, counts, strict=True)) / sum(counts)
        assert fast._loss(model, decoder, both, 26).item() == pytest.approx(weighted,
                                                                            abs=tolerance)

    params = LoraParams(top_layers=4, batch_size=2, max_steps=6, learning_rate=3e-3, seed=3)
    out = fast.train_lora_fast(EXAMPLES, model_dir, params, work_dir=tmp_path, save_steps=2)
    assert out.steps == 6 and len(out.losses) == 6
    assert out.losses[-1][1] < out.losses[0][1]
    assert (tmp_path / "fast-checkpoint.pt").exists()
    changed = LoraParams(top_layers=4, batch_size=2, max_steps=6, learning_rate=3e-3, seed=4)
    with pytest.raises(ConfigError, match=r"cannot resume .*\(seed 3 -> 4\)"):
        fast.train_lora_fast(EXAMPLES, model_dir, changed, work_dir=tmp_path, resume=True)
    resumed = fast.train_lora_fast(EXAMPLES, model_dir, params, work_dir=tmp_path, resume=True)
    assert resumed.resumed_from == 4
    assert resumed.losses[-1][1] == pytest.approx(out.losses[-1][1], rel=0.01)
