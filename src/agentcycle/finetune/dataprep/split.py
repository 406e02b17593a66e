"""Train/test splits with no fact on both sides.

Paraphrases of one fact ("How long ...?" / "Within how many days ...?") in both splits
would let the test score memory: ``by="fact"`` keeps every record about one fact (same
keywords and section, or same answer) and every copy of one question on the same side.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from agentcycle.errors import DataError
from agentcycle.finetune.dataprep._io import last_user
from agentcycle.finetune.dataprep.leakage import normalise

Record = dict[str, Any]
BY = ("fact", "record")


def fact_key(record: Record) -> str:
    """What a record is about: its keywords (+ section), else its normalised answer."""
    keywords = record.get("keywords")
    if isinstance(keywords, list) and keywords:
        return "k:" + "|".join(sorted(normalise(str(k)) for k in keywords)) + \
            f"@{record.get('section', '')}"
    return "a:" + normalise(_answer(record))


def question_key(record: Record) -> str:
    if isinstance(record.get("question"), str):
        return normalise(record["question"])
    messages = record.get("messages") or record.get("prompt") or []
    if isinstance(messages, str):  # a plain-text prompt (TRL's standard format)
        return normalise(messages)
    return normalise(last_user(messages[:-1] if "messages" in record else messages))


def _answer(record: Record) -> str:
    if isinstance(record.get("answer"), str):
        return record["answer"]
    for key in ("messages", "completion", "chosen"):
        messages = record.get(key)
        if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
            return str(messages[-1].get("content") or "")
    return ""


def split_records(records: list[Record], test_size: float, *, by: str = "fact",
                  seed: int = 0) -> tuple[list[Record], list[Record]]:
    """(train, test); ``test_size`` a fraction (0, 1) or a count of records (>= 1)."""
    if by not in BY:
        raise DataError(f"--by must be one of {', '.join(BY)}, not '{by}'")
    if len(records) < 2:
        raise DataError("a split needs at least 2 records")
    for number, record in enumerate(records, start=1):
        for key in ("messages", "prompt", "completion", "chosen"):
            value = record.get(key)
            if value is not None and not isinstance(value, str) and not (
                    isinstance(value, list) and all(isinstance(m, dict) for m in value)):
                raise DataError(f"line {record.get('_line', number)}: '{key}' must be a list "
                                'of {"role": ..., "content": ...} objects')
    target = round(test_size * len(records)) if test_size < 1 else int(test_size)
    if test_size <= 0 or not 1 <= target < len(records):
        raise DataError(f"--test-size {test_size:g} leaves an empty split of "
                        f"{len(records)} records")
    groups = _groups(records) if by == "fact" else [[i] for i in range(len(records))]
    random.Random(seed).shuffle(groups)
    test_ids: set[int] = set()
    for group in groups:
        if len(test_ids) >= target:
            break
        test_ids.update(group)
    if len(test_ids) == len(records):
        raise DataError("every record is about one fact: nothing is left to train on")
    train = [r for i, r in enumerate(records) if i not in test_ids]
    test = [r for i, r in enumerate(records) if i in test_ids]
    return train, test


def _groups(records: list[Record]) -> list[list[int]]:
    """Union-find over shared fact keys and shared questions."""
    parent = list(range(len(records)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[str, int] = {}
    for i, record in enumerate(records):
        for key in (fact_key(record), "q:" + question_key(record)):
            if key.endswith(":"):
                continue  # nothing known: an empty key must not join unrelated records
            if key in owner:
                parent[root(i)] = root(owner[key])
            else:
                owner[key] = i
    groups: dict[int, list[int]] = {}
    for i in range(len(records)):
        groups.setdefault(root(i), []).append(i)
    return list(groups.values())


def sample_per_fact(records: list[Record], per_fact: int, *, seed: int = 7) -> list[Record]:
    """At most ``per_fact`` wordings of each fact (its ``fact`` id, else its key facts), in
    a seeded choice: a smaller training set that still covers every fact."""
    import random

    by_fact: dict[str, list[Record]] = {}
    for record in records:
        by_fact.setdefault(str(record.get("fact") or fact_key(record)), []).append(record)
    rng = random.Random(seed)
    chosen = []
    for key in sorted(by_fact):
        wordings = list(by_fact[key])
        rng.shuffle(wordings)
        chosen.extend(wordings[:per_fact])
    return chosen


def sample_spread(records: list[Record], n: int | None, label: Callable[[Record], str], *,
                  seed: int = 7) -> list[Record]:
    """``n`` records spread evenly over the classes ``label(record)`` names (a seeded
    choice within each class, classes taken in turn), so a small sample of a file sorted
    by class still holds every class: the first 128 tool records held three of the six
    tools and no record without a call."""
    if n is None or n >= len(records):
        return list(records)
    by_class: dict[str, list[Record]] = {}
    for record in records:
        by_class.setdefault(str(label(record)), []).append(record)
    rng = random.Random(seed)
    queues = [rng.sample(group, len(group)) for _, group in sorted(by_class.items())]
    chosen: list[Record] = []
    while len(chosen) < n:
        for queue in queues:
            if queue and len(chosen) < n:
                chosen.append(queue.pop())
    return chosen
