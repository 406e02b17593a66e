"""Answer forms that teach a small model to ground its answer in the context.

A 135M model asked for "one short sentence with the exact figure" picks the wrong figure
from the passage more often than not; copying is what such a model does well. Trained to
quote the supporting sentence first and state the fact after it (the form RAFT trains),
it finds the sentence, copies it, and the fact follows from the copy. The statute's
sentences are learned along the way, which answers a question whose passage was not
retrieved. Measured in docs/benchmarks.md.
"""

from __future__ import annotations

import re
from typing import Any

from agentcycle.errors import ConfigError

Record = dict[str, Any]

ANSWER_FORMS = ("quote", "short")  # short: the answers as the data writes them
MAX_QUOTE_WORDS = 30  # longer sentences are cut to the clauses that hold the facts


def check_answer_form(form: str) -> str:
    if form not in ANSWER_FORMS:
        raise ConfigError(f"unknown answer form '{form}': choose one of "
                          f"{', '.join(ANSWER_FORMS)}")
    return form


def with_answer_form(records: list[Record], form: str) -> list[Record]:
    """The records in one of :data:`ANSWER_FORMS`: ``quote`` is :func:`quote_then_answer`."""
    return quote_then_answer(records) if check_answer_form(form) == "quote" else records


def quote_then_answer(records: list[Record]) -> list[Record]:
    """Records whose ``answer`` becomes ``§ N: "<supporting text>" Answer: <facts>.``.

    Needs ``evidence`` (the supporting sentence, verbatim) on a record; one without it
    is kept as it is. The facts stated are the record's ``keywords`` when it has them."""
    return [_quoted(record) if record.get("evidence") else record for record in records]


def _quoted(record: Record) -> Record:
    facts = [str(k) for k in record.get("keywords") or []]
    quote = supporting_clauses(str(record["evidence"]), facts)
    statement = "; ".join(facts) if facts else str(record["answer"]).strip()
    section = f"§ {record['section']}: " if record.get("section") not in (None, "") else ""
    return {**record, "answer": f'{section}"{quote}" Answer: {statement.rstrip(".")}.'}


def supporting_clauses(sentence: str, facts: list[str],
                       max_words: int = MAX_QUOTE_WORDS) -> str:
    """The sentence, or when it is long, the shortest run of its clauses that holds every
    fact (an ellipsis marks what was cut), so quote and answer stay short."""
    sentence = sentence.strip()
    if len(sentence.split()) <= max_words:
        return sentence
    clauses = re.split(r"(?<=[,;:])\s+", sentence)
    best = None
    for start in range(len(clauses)):
        for end in range(start + 1, len(clauses) + 1):
            text = " ".join(clauses[start:end])
            if all(f.lower() in text.lower() for f in facts):
                if best is None or len(text.split()) < len(best[2].split()):
                    best = (start, end, text)
                break
    if best is None:
        return sentence
    start, end, text = best
    text = text.rstrip(",;:")
    return ("... " if start else "") + text + (" ..." if end < len(clauses) else "")
