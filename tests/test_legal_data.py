"""The legal example's question/answer data: every record traceable to one sentence of the Act,
every fact of the Act trained on, and no test question leaking into training by rewording."""

import json
import re
from collections import Counter

import pytest

from agentcycle.examples import legal_corpus_dir, legal_split
from agentcycle.finetune.dataprep.leakage import find_leaks

SPLITS = ("train", "validation", "test")
FIELDS = {"id", "fact", "question", "answer", "keywords", "section", "evidence"}


def _records(split: str) -> list[dict]:
    return [json.loads(line) for line in legal_split(split).read_text().splitlines()]


def _sections() -> dict[int, str]:
    """Section number -> the text of that section, read from the corpus files."""
    sections = {}
    for path in sorted(legal_corpus_dir().glob("*.md")):
        parts = re.split(r"^## § (\d+)\.", path.read_text(), flags=re.MULTILINE)
        sections.update({int(n): body for n, body in zip(parts[1::2], parts[2::2], strict=True)})
    return sections


@pytest.fixture(scope="module")
def data() -> dict[str, list[dict]]:
    return {split: _records(split) for split in SPLITS}


def test_every_record_has_the_full_shape(data):
    for split, records in data.items():
        for r in records:
            assert set(r) >= FIELDS, (split, r.get("id"), FIELDS - set(r))
            assert r["keywords"] and all(isinstance(k, str) and k for k in r["keywords"]), r["id"]
            assert re.fullmatch(r"s\d{2}-[a-z0-9.-]+", r["fact"]), r["fact"]
            assert int(r["fact"][1:3]) == r["section"], (r["id"], r["fact"], r["section"])


def test_ids_and_questions_are_unique_across_splits(data):
    ids = Counter(r["id"] for records in data.values() for r in records)
    assert not [i for i, n in ids.items() if n > 1]
    texts = Counter(r["question"].strip().lower() for records in data.values() for r in records)
    assert not [t for t, n in texts.items() if n > 1]


def test_evidence_is_verbatim_and_holds_every_keyword(data):
    sections = _sections()
    for records in data.values():
        for r in records:
            assert r["evidence"] in sections[r["section"]], (r["id"], r["evidence"])
            for keyword in r["keywords"]:
                assert keyword.lower() in r["evidence"].lower(), (r["id"], keyword)
                assert keyword.lower() in r["answer"].lower(), (r["id"], keyword)


def test_answers_are_one_short_sentence_citing_their_section(data):
    for records in data.values():
        for r in records:
            assert r["answer"].endswith(f"(§ {r['section']})."), r["id"]
            assert len(r["answer"].split()) <= 25, r["id"]


def test_one_fact_has_one_section_and_one_evidence_sentence(data):
    seen: dict[str, tuple[int, str]] = {}
    for records in data.values():
        for r in records:
            assert seen.setdefault(r["fact"], (r["section"], r["evidence"])) == (
                r["section"], r["evidence"]), r["id"]


def test_sizes_and_coverage(data):
    train_facts = Counter(r["fact"] for r in data["train"])
    all_facts = {r["fact"] for records in data.values() for r in records}
    assert len(all_facts) >= 150
    # Every fact is trained on six times, in six wordings; none is left to chance.
    assert {fact: train_facts[fact] for fact in all_facts if train_facts[fact] < 6} == {}
    assert len(data["test"]) >= 110
    assert len(data["validation"]) >= 35
    assert {r["section"] for r in data["test"]} == set(_sections())
    # The original splits are kept, so earlier benchmark runs stay comparable.
    test_ids = {r["id"] for r in data["test"]}
    assert {f"q{n}" for n in range(141, 173)} <= test_ids
    assert {f"q{n:03d}" for n in range(1, 121)} <= {r["id"] for r in data["train"]}


def test_exact_leak_check_catches_a_copied_test_question(data):
    # The guard itself must be able to fail: a test question copied into training is found.
    test = [r["question"] for r in data["test"]]
    assert find_leaks([test[0].upper() + "  "], test, embedder=None)


@pytest.mark.slow  # embeds ~1,500 questions with the bundled MiniLM (about a minute on 2 cores)
def test_no_train_or_validation_question_paraphrases_a_test_question(data, embedder):
    test = [r["question"] for r in data["test"]]
    for split in ("train", "validation"):
        leaks = find_leaks([r["question"] for r in data[split]], test, embedder, threshold=0.9)
        assert not leaks, [leak.describe() for leak in leaks[:5]]
