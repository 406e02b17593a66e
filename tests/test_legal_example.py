import json
import re

from agentcycle.evals import load_cases
from agentcycle.examples import legal_corpus_dir, legal_split
from agentcycle.rag import load_documents


def _sections() -> dict[int, str]:
    text = "\n".join(d.text for d in load_documents(legal_corpus_dir()))
    parts = re.split(r"^## § (\d+)\.", text, flags=re.MULTILINE)
    return {int(number): body for number, body in zip(parts[1::2], parts[2::2], strict=True)}


def test_statute_has_at_least_30_sections():
    sections = _sections()
    assert len(sections) >= 30
    assert sorted(sections) == list(range(1, len(sections) + 1))


def test_at_least_150_pairs_and_test_never_reaches_training():
    splits = {name: load_cases(legal_split(name)) for name in ("train", "validation", "test")}
    assert sum(len(cases) for cases in splits.values()) >= 150
    ids = [c.id for cases in splits.values() for c in cases]
    assert len(ids) == len(set(ids))
    seen = {c.question.strip().lower() for c in splits["train"] + splits["validation"]}
    assert not [c for c in splits["test"] if c.question.strip().lower() in seen]


def test_every_keyword_is_in_its_answer_and_its_section():
    sections = _sections()
    for name in ("train", "validation", "test"):
        for case in load_cases(legal_split(name)):
            for keyword in case.keywords:
                assert keyword.lower() in case.answer.lower(), (case.id, keyword)
                assert keyword.lower() in sections[int(case.section)].lower(), (case.id, keyword)


def test_the_files_are_jsonl():
    for name in ("train", "validation", "test"):
        for line in legal_split(name).read_text().splitlines():
            assert set(json.loads(line)) >= {"id", "question", "answer", "keywords", "section"}
