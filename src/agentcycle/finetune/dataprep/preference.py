"""DPO preference pairs: ``{"prompt": [...], "chosen": [...], "rejected": [...]}``.

TRL's conversational preference format. Two sources:
- eval failures: the case's reference answer is chosen, the model's wrong answer rejected;
- router feedback: answers to the same prompt that users scored differently (the best
  scored chosen, the worst rejected), from traced LLM calls joined with router.db.
A pair whose chosen and rejected say the same thing (after normalising case, space and
punctuation) teaches nothing and makes DPO's loss degenerate: it is dropped and counted
here, and :func:`check_pair` makes it a DataError when a file is validated.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from agentcycle.errors import DataError
from agentcycle.evals.results import EvalRun
from agentcycle.finetune.dataprep._io import text_of
from agentcycle.finetune.dataprep.leakage import normalise
from agentcycle.finetune.dataprep.traces import (
    Collected,
    LlmCall,
    case_passes,
    case_prompt,
    chat_messages,
)

Record = dict[str, Any]
SAME = "chosen equals rejected"


def pair(prompt: list[dict[str, str]], chosen: str, rejected: str, **meta: Any) -> Record:
    return {"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen.strip()}],
            "rejected": [{"role": "assistant", "content": rejected.strip()}], **meta}


def check_pair(record: Record, where: str = "pair") -> None:
    """Raise DataError naming the problem when a record is not a usable DPO pair."""
    for key in ("prompt", "chosen", "rejected"):
        value = record.get(key)
        if not isinstance(value, list) or not value or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) for m in value):
            raise DataError(f"{where}: '{key}' must be a non-empty list of messages")
    chosen, rejected = (" ".join(text_of(m.get("content")) for m in record[k])
                        for k in ("chosen", "rejected"))
    if not normalise(chosen) or not normalise(rejected):
        raise DataError(f"{where}: empty chosen or rejected answer")
    if normalise(chosen) == normalise(rejected):
        raise DataError(f"{where}: chosen and rejected answers are identical; "
                        "the pair teaches nothing")


def dpo_from_eval(run: EvalRun, *, min_score: float | None = None) -> Collected:
    """One pair per failing case that has a reference answer."""
    collected = Collected()
    for case in run.results:
        collected.seen += 1
        if case.error or case.output.error:
            collected.skipped["case errored"] += 1
            continue
        if case_passes(case, min_score):
            collected.skipped["case passed"] += 1
            continue
        if not (case.reference or "").strip():
            collected.skipped["no reference answer"] += 1
            continue
        if not case.output.text.strip():
            collected.skipped["empty answer"] += 1
            continue
        _add(collected, pair(case_prompt(case), case.reference or "", case.output.text,
                             case_id=case.id, eval_run=run.run_id))
    return collected


def dpo_from_feedback(calls: list[LlmCall], *, min_gap: float = 0.5) -> Collected:
    """Pairs from scored answers to the same prompt whose scores differ by ``min_gap``."""
    collected = Collected()
    groups: dict[str, list[tuple[LlmCall, list[dict[str, str]]]]] = defaultdict(list)
    for call in calls:
        collected.seen += 1
        prompt = chat_messages(call.messages)
        if call.score is None:
            collected.skipped["no feedback"] += 1
        elif prompt is None:
            collected.skipped["tool or non-text messages"] += 1
        else:
            groups[json.dumps(prompt, sort_keys=True)].append((call, prompt))
    for group in groups.values():
        if len(group) < 2:
            collected.skipped["only one answer to its prompt"] += 1
            continue
        group.sort(key=lambda item: item[0].score or 0.0)
        (worst, _), (best, prompt) = group[0], group[-1]
        if (best.score or 0.0) - (worst.score or 0.0) < min_gap:
            collected.skipped["scores too close"] += 1
            continue
        _add(collected, pair(prompt, best.text, worst.text, chosen_trace=best.trace_id,
                             rejected_trace=worst.trace_id))
    return collected


def _add(collected: Collected, record: Record) -> None:
    try:
        check_pair(record)
    except DataError as exc:
        collected.skipped[SAME if "identical" in str(exc) else "invalid pair"] += 1
        return
    collected.records.append(record)
