"""Check a dataset before training on it: shapes, duplicates, lengths, label mask, leakage.

Every record shape the trainers take is recognised: ``messages`` (SFT), ``question`` /
``answer`` (RAG QA), ``prompt`` / ``completion`` (SFT, TRL's prompt-completion) and
``prompt`` / ``chosen`` / ``rejected`` (DPO). Problems are collected with their line
numbers instead of stopping at the first, so one run lists everything to fix.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentcycle._jsonl import jsonl_lines
from agentcycle.errors import DataError
from agentcycle.finetune.dataprep._io import last_user, text_of
from agentcycle.finetune.dataprep.leakage import DEFAULT_THRESHOLD, Leak, find_leaks, normalise
from agentcycle.finetune.dataprep.preference import check_pair

Record = dict[str, Any]


@dataclass
class Row:
    line: int
    kind: str  # "sft", "qa", "dpo"
    question: str
    answer: str
    example: dict[str, list[dict[str, str]]] | None  # prompt/completion, for the label mask


@dataclass
class DatasetReport:
    path: str
    lines: int = 0
    kinds: Counter = field(default_factory=Counter)
    problems: list[tuple[int, str]] = field(default_factory=list)  # (line, what is wrong)
    duplicates: list[tuple[int, int]] = field(default_factory=list)  # (line, first line)
    lengths: list[int] = field(default_factory=list)
    length_unit: str = "chars"
    answer_tokens: list[int] = field(default_factory=list)
    label_mask: str = "not checked (no tokenizer given)"
    against: str | None = None
    leaks: list[Leak] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list, repr=False)

    @property
    def records(self) -> int:
        return len(self.rows)

    @property
    def ok(self) -> bool:
        """Trainable as it is: nothing malformed, no label-mask failure, no test leak."""
        return not self.problems and not self.leaks and self.records > 0

    def length_stats(self) -> dict[str, float]:
        return distribution(self.lengths)


def distribution(values: list[int]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def pct(q: float) -> float:
        return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])

    return {"min": float(ordered[0]), "p50": pct(0.5), "mean": statistics.fmean(ordered),
            "p95": pct(0.95), "max": float(ordered[-1])}


def validate_dataset(path: str | Path, tokenizer: Any = None, against: str | Path | None = None,
                     *, embedder: Any = None, max_length: int = 1024,
                     threshold: float = DEFAULT_THRESHOLD) -> DatasetReport:
    """A report on the JSONL dataset at ``path`` (see the module docstring).

    With ``tokenizer``, lengths are in tokens and every SFT example goes through the
    trainer's label mask (only the answer tokens train): an example that the template
    cannot mask, or whose answer truncation removes, is a problem. With ``against`` (a
    test file), questions that equal or (with ``embedder``) paraphrase a test question
    are leaks.
    """
    report = DatasetReport(str(path))
    for number, line in jsonl_lines(path):
        report.lines = number
        row = _parse(line, number, report.problems)
        if row is not None:
            report.rows.append(row)
            report.kinds[row.kind] += 1
    _duplicates(report)
    _lengths(report, tokenizer, max_length)
    if against is not None:
        report.against = str(against)
        test = [r.question for _, line in jsonl_lines(against)
                if (r := _parse(line, 0, [])) is not None]
        if not test:
            raise DataError(f"{against}: no usable test questions to check leakage against")
        report.leaks = find_leaks([r.question for r in report.rows], test, embedder, threshold)
    return report


def _parse(line: str, number: int, problems: list[tuple[int, str]]) -> Row | None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        problems.append((number, f"malformed JSON ({exc.msg})"))
        return None
    except RecursionError:
        problems.append((number, "malformed JSON (nested too deeply)"))
        return None
    if not isinstance(record, dict):
        problems.append((number, "not a JSON object"))
        return None
    try:
        return _row(record, number)
    except DataError as exc:
        # to_examples and check_pair name a place; the report names the line itself.
        problems.append((number, str(exc).removeprefix("pair:?: ").removeprefix("pair: ")))
        return None


def _row(record: Record, number: int) -> Row:
    from agentcycle.finetune.data import to_examples

    if "chosen" in record or "rejected" in record:
        check_pair(record, "pair")
        prompt = record["prompt"]
        return Row(number, "dpo", _question(prompt), _joined(record["chosen"]), None)
    if "prompt" in record and "completion" in record:
        example = to_examples([{"messages": [*record["prompt"], *record["completion"]]}],
                              "pair")[0] if _is_messages(record) else None
        if example is None:
            raise DataError("pair: 'prompt' and 'completion' must be lists of messages")
        return Row(number, "sft", _question(example["prompt"]),
                   _joined(example["completion"]), example)
    example = to_examples([record], "pair")[0]  # messages or question/answer, its errors
    if not _joined(example["completion"]).strip():
        raise DataError("pair: empty answer")
    kind = "qa" if "question" in record else "sft"
    question = record["question"] if kind == "qa" else _question(example["prompt"])
    return Row(number, kind, question, _joined(example["completion"]), example)


def _is_messages(record: Record) -> bool:
    return all(isinstance(record[k], list) and all(isinstance(m, dict) for m in record[k])
               for k in ("prompt", "completion"))


def _question(messages: list[dict[str, Any]]) -> str:
    # The RAG prompt is "Context: ... Question: X": the question is what leaks, not context.
    text = last_user(messages)
    return text.rsplit("Question:", 1)[-1].strip() if "Question:" in text else text.strip()


def _joined(messages: list[dict[str, Any]]) -> str:
    return " ".join(text_of(m.get("content")) for m in messages)


def _duplicates(report: DatasetReport) -> None:
    first: dict[tuple[str, str], int] = {}
    for row in report.rows:
        key = (normalise(row.question), normalise(row.answer))
        if key in first:
            report.duplicates.append((row.line, first[key]))
        else:
            first[key] = row.line


def _lengths(report: DatasetReport, tokenizer: Any, max_length: int) -> None:
    if tokenizer is None:
        report.lengths = [len(r.question) + len(r.answer) for r in report.rows]
        return
    report.length_unit = "tokens"
    mask = _label_mask_hook()
    report.label_mask = "checked" if mask else "not checked (agentcycle.finetune.tokenize absent)"
    for row in report.rows:
        if row.example is not None and mask is not None:
            try:
                tokenized = mask(tokenizer, row.example, max_length, where=f"line {row.line}")
            except DataError as exc:
                report.problems.append((row.line, str(exc).removeprefix(f"line {row.line}: ")))
                continue
            report.lengths.append(len(tokenized.input_ids))
            report.answer_tokens.append(tokenized.answer_tokens)
        else:
            report.lengths.append(len(tokenizer(row.question + " " + row.answer)["input_ids"]))


def _label_mask_hook():
    """The trainer's own label mask, so validation checks exactly what training does."""
    try:
        from agentcycle.finetune.tokenize import tokenize_example
    except ImportError:
        return None
    return tokenize_example
