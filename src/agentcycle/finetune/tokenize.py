"""Tokenize a prompt/completion example with its label mask: only the answer trains.

The prompt is rendered with the model's chat template and the generation prompt (the
assistant marker), exactly as a server renders a request; the answer tokens are what
the full conversation adds after it. A template whose full rendering does not start
with that prompt rendering has no assistant marker to mask by: we refuse it rather
than train the model to repeat its prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agentcycle.errors import DataError

IGNORE_INDEX = -100  # the label PyTorch's cross-entropy skips


@dataclass(frozen=True)
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]

    @property
    def answer_tokens(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)

    def __len__(self) -> int:
        return len(self.input_ids)


def tokenize_example(tokenizer: Any, example: dict[str, list[dict[str, str]]],
                     max_length: int, where: str = "example") -> TokenizedExample:
    """``input_ids`` and ``labels`` (IGNORE_INDEX except the answer), cut at ``max_length``."""
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(f"the tokenizer of this model has no chat template: {where} cannot be "
                        "rendered as the server renders it (use a chat/instruct model)")
    prompt = _ids(tokenizer, example["prompt"], add_generation_prompt=True)
    full = _ids(tokenizer, example["prompt"] + example["completion"], add_generation_prompt=False)
    if full[: len(prompt)] != prompt or len(full) == len(prompt):
        raise DataError(f"{where}: the chat template has no assistant marker the label mask "
                        "can split on (the conversation does not start with the prompt as "
                        "rendered for generation)")
    if len(prompt) >= max_length:
        raise DataError(f"{where}: no answer tokens left after truncation (prompt is "
                        f"{len(prompt)} tokens, max length {max_length}); raise max_length or "
                        "shorten the prompt")
    full = full[:max_length]
    labels = [IGNORE_INDEX] * len(prompt) + full[len(prompt):]
    return TokenizedExample(input_ids=full, labels=labels)


def tokenize_examples(tokenizer: Any, examples: list[dict], max_length: int
                      ) -> list[TokenizedExample]:
    return [tokenize_example(tokenizer, example, max_length, where=f"example {i + 1}")
            for i, example in enumerate(examples)]


def _ids(tokenizer: Any, messages: list[dict], *, add_generation_prompt: bool) -> list[int]:
    rendered = tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=add_generation_prompt)
    return tokenizer(rendered, add_special_tokens=False)["input_ids"]
