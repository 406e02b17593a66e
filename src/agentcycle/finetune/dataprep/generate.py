"""Question/answer pairs from a document corpus, for fine-tuning a RAG model.

Two generators write the same record shape as ``examples/legal/qa/*.jsonl``
(``question``, ``answer``, ``keywords``, ``section``) plus ``evidence`` (the sentence or
passage the fact comes from), ``source`` and ``generator``:

- :func:`generate_offline` needs no model. It splits each section into sentences and
  turns every sentence that carries a key fact (a date, a form, a percentage, an amount,
  a duration, a number with its unit, a named body) into an "echo" question: the fact is
  replaced in place by its question phrase ("within 9 days" -> "within how many days").
  Limits: one fact per question (the sentence's other facts stay visible), questions keep
  the sentence's word order (grammatical for the wh-word first, stilted otherwise), no
  paraphrasing (use a teacher, or it under-trains on reworded questions), English only,
  sentences over ``max_words`` words are skipped.
- :func:`generate_with_teacher` asks a model through the :class:`~agentcycle.router.Router`
  (on the platform a cloud model behind LiteLLM) for N pairs per passage as JSON; each
  pair is validated (strings present, keywords copied from the passage and stated in the
  answer) and bad output is skipped and counted, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentcycle.errors import AgentcycleError, DataError, ServiceError
from agentcycle.finetune.dataprep.leakage import normalise
from agentcycle.rag.documents import load_documents, split_documents

Record = dict[str, Any]
_MONTHS = ("January|February|March|April|May|June|July|August|September|October|"
           "November|December")
_BODY = ("Registry|Tribunal|Agency|Assembly|Office|Court|Board|Authority|Council|"
         "Service|Commission|Ombudsman|Ministry|Department|Inspectorate")
# (pattern, question phrase) in priority order; {unit} is the fact's own unit word(s).
FACT_PATTERNS: list[tuple[re.Pattern, str]] = [
    (re.compile(rf"\b\d{{1,2}} (?:{_MONTHS}) \d{{4}}\b"), "what date"),
    (re.compile(r"\bForm [A-Z]{1,3}-?\d+\b"), "which form"),
    (re.compile(r"\b\d+(?:\.\d+)? ?(?:%|per ?cent\b)"), "what percentage"),
    (re.compile(r"\b\d[\d,]*(?:\.\d+)? (?P<unit>(?:working |calendar )?(?:crowns|euros|dollars|"
                r"pounds|hours|days|weeks|months|years|months' rent|times))"),
     "how many {unit}"),
    (re.compile(r"\b(?:1|one) (?P<unit>(?:working |calendar )?(?:hour|day|week|month|year))\b"),
     "how many {unit}s"),
    (re.compile(r"\b(?:aged|age of) (?:under|over|at least) \d+\b"), "aged what"),
    (re.compile(rf"\b(?:[Tt]he )?(?:[A-Z][a-z]+ ){{0,3}}(?:{_BODY})\b"), "which body"),
]
_SECTION_NUMBER = re.compile(r"§\s*(\d+)")
_PRONOUNS = {"It", "This", "They", "These", "Such", "That", "Its"}
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"“(§])")


@dataclass
class GenerationReport:
    """What a generator did: passages read, records kept, and why others were dropped."""

    passages: int = 0
    records: list[Record] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    teacher_calls: int = 0
    cost_usd: float = 0.0


@dataclass(frozen=True)
class Passage:
    text: str  # the section's body (its heading excluded)
    heading: str
    source: str

    @property
    def section(self) -> int | str:
        number = _SECTION_NUMBER.search(self.heading)
        return int(number.group(1)) if number else self.heading

    @property
    def ref(self) -> str:
        number = _SECTION_NUMBER.search(self.heading)
        return f"§ {number.group(1)}" if number else (self.heading or self.source)


def passages(corpus_dir: str | Path, max_chars: int = 1500) -> list[Passage]:
    """The corpus's sections (long ones cut by the RAG chunker), headings kept apart."""
    chunks = split_documents(load_documents(corpus_dir), chunk_size=max_chars, overlap=0)
    out = []
    for chunk in chunks:
        body = chunk.text.split("\n", 1)[1] if chunk.heading else chunk.text
        if body.strip():
            out.append(Passage(" ".join(body.split()), chunk.heading, chunk.source))
    return out


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(" ".join(text.split())) if s.strip()]


# -- offline -----------------------------------------------------------------------

def generate_offline(corpus_dir: str | Path, *, max_words: int = 45,
                     answer_style: str = "short") -> GenerationReport:
    """Rule-made questions, one per key fact per sentence; deterministic.

    ``answer_style="quote"`` answers by quoting the supporting sentence, then the fact.
    """
    if answer_style not in ("short", "quote"):
        raise DataError(f"answer style must be 'short' or 'quote', not '{answer_style}'")
    report = GenerationReport()
    seen: set[str] = set()
    for passage in passages(corpus_dir):
        report.passages += 1
        for sentence in sentences(passage.text):
            if len(sentence.split()) > max_words:
                report.skipped["sentence too long"] += 1
                continue
            facts = list(_facts(sentence))
            if not facts:
                report.skipped["no key fact"] += 1
            for fact, phrase, start, end in facts:
                question = _echo_question(sentence, phrase, start, end, passage.ref)
                key = normalise(question)
                if key in seen:
                    report.skipped["duplicate question"] += 1
                    continue
                seen.add(key)
                answer = _answer(fact, sentence, passage.ref, answer_style)
                report.records.append(_record(question, answer, [fact], passage, sentence,
                                              "offline"))
    return report


def _facts(sentence: str):
    """(fact, question phrase, start, end) for each non-overlapping fact in the sentence."""
    taken: list[tuple[int, int]] = []
    for pattern, phrase in FACT_PATTERNS:
        for match in pattern.finditer(sentence):
            start, end = match.span()
            if any(start < b and a < end for a, b in taken):
                continue
            if sentence[max(0, start - 2):start].strip() == "§":
                continue  # a cross-reference, not a fact
            taken.append((start, end))
            unit = match.groupdict().get("unit") or ""
            yield match.group(0), phrase.format(unit=unit), start, end


def _echo_question(sentence: str, phrase: str, start: int, end: int, ref: str) -> str:
    if phrase == "aged what":
        phrase = "aged under what age"  # the comparison word goes with the number
    head, tail = sentence[:start], sentence[end:].rstrip(" .;:")
    if phrase.endswith("s") and tail.startswith("'s"):
        tail = tail[2:] if phrase.endswith("s'") else "'" + tail[2:]  # "weeks's" -> "weeks'"
    if not head:
        return f"{phrase[0].upper()}{phrase[1:]}{tail}?"
    if head.split(" ", 1)[0] in _PRONOUNS:  # "It was passed ..." names nothing on its own
        return f"In {ref}, {head[0].lower()}{head[1:]}{phrase}{tail}?"
    return f"{head}{phrase}{tail}?"


def _answer(fact: str, sentence: str, ref: str, style: str) -> str:
    fact = fact[0].upper() + fact[1:]
    if style == "quote":
        return f'{ref} says: "{sentence}" So the answer is {fact[0].lower() + fact[1:]}.'
    return f"{fact} ({ref})."


def _record(question: str, answer: str, keywords: list[str], passage: Passage, evidence: str,
            generator: str) -> Record:
    digest = hashlib.sha1(f"{passage.source}|{question}".encode()).hexdigest()[:10]
    return {"id": f"gen-{digest}", "question": question, "answer": answer,
            "keywords": keywords, "section": passage.section, "evidence": evidence,
            "source": passage.source, "generator": generator}


# -- teacher -----------------------------------------------------------------------

TEACHER_SYSTEM = ("You write exam questions that test one fact each from a legal or technical "
                  "document. You reply with JSON only.")
TEACHER_PROMPT = """Write {n} different questions about the passage below, each answerable from \
the passage alone, each about one specific fact (a number, date, deadline, amount, form or body). \
Word them as a user would ask, without quoting the passage.

Reply with only a JSON array of {n} objects with these keys:
- "question": the question;
- "answer": one short sentence stating the fact, citing {ref};
- "keywords": the fact itself as 1-3 short phrases copied exactly from the passage.

Passage ({ref}, {heading}):
{text}"""


def generate_with_teacher(corpus_dir: str | Path, router: Any, model: str | None = None, *,
                          per_passage: int = 3, max_tokens: int = 1024,
                          progress: Callable[[int, int], None] | None = None
                          ) -> GenerationReport:
    """``per_passage`` pairs per passage from the teacher behind ``router`` (``model`` is a
    route or backend name; None takes the router's default)."""
    if per_passage < 1:
        raise DataError(f"--per-passage must be at least 1, not {per_passage}")
    report = GenerationReport()
    items = passages(corpus_dir)
    seen: set[str] = set()
    first_error: str | None = None
    for done, passage in enumerate(items, start=1):
        report.passages += 1
        try:
            reply = _ask_teacher(router, model, passage, per_passage, max_tokens)
        except AgentcycleError as exc:  # one failed call costs that passage, not the run
            report.skipped["teacher call failed"] += 1
            first_error = first_error or str(exc)
            continue
        report.teacher_calls += 1
        report.cost_usd += reply.cost_usd
        for record in parse_teacher_reply(reply.text, passage, report.skipped)[:per_passage]:
            key = normalise(record["question"])
            if key in seen:
                report.skipped["duplicate question"] += 1
                continue
            seen.add(key)
            report.records.append(record)
        if progress:
            progress(done, len(items))
    if report.teacher_calls == 0 and first_error:
        raise ServiceError(f"the teacher model failed on every passage: {first_error}")
    return report


def _ask_teacher(router: Any, model: str | None, passage: Passage, n: int, max_tokens: int):
    prompt = TEACHER_PROMPT.format(n=n, ref=passage.ref, heading=passage.heading,
                                   text=passage.text)
    messages = [{"role": "system", "content": TEACHER_SYSTEM},
                {"role": "user", "content": prompt}]
    params: dict[str, Any] = {"max_tokens": max_tokens, "temperature": 0.7}
    if model:
        params["model"] = model
    return router.complete(messages, **params)


def parse_teacher_reply(text: str, passage: Passage, skipped: Counter) -> list[Record]:
    """The valid pairs in a teacher's reply; each invalid one counted under its reason."""
    items = _json_items(text)
    if items is None:
        skipped["reply not a JSON array"] += 1
        return []
    records = []
    for item in items:
        reason = _invalid(item, passage.text)
        if reason:
            skipped[reason] += 1
            continue
        keywords = [k.strip() for k in item["keywords"]]
        records.append(_record(item["question"].strip(), item["answer"].strip(), keywords,
                               passage, passage.text, "teacher"))
    return records


def _json_items(text: str) -> list | None:
    # Models wrap JSON in ```json fences or a sentence: take the outermost array.
    start, end = text.find("["), text.rfind("]")
    if start < 0 or end <= start:
        return None
    try:
        value = json.loads(text[start:end + 1])
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, list) else None


def _invalid(item: Any, passage: str) -> str | None:
    if not isinstance(item, dict):
        return "pair not a JSON object"
    question, answer, keywords = item.get("question"), item.get("answer"), item.get("keywords")
    if not (isinstance(question, str) and question.strip()
            and isinstance(answer, str) and answer.strip()):
        return "missing question or answer"
    if isinstance(keywords, str):
        keywords = item["keywords"] = [keywords]
    if not (isinstance(keywords, list) and keywords
            and all(isinstance(k, str) and k.strip() for k in keywords)):
        return "missing keywords"
    if not all(normalise(k) in normalise(passage) for k in keywords):
        return "keyword not in the passage"  # a fact the teacher made up
    if not all(normalise(k) in normalise(answer) for k in keywords):
        return "answer does not state its keywords"
    return None
