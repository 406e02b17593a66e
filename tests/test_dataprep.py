"""Dataset preparation: leakage, generation, validation, splits (real MiniLM, real files)."""

from __future__ import annotations

import pytest

from agentcycle.finetune.dataprep import find_leaks, normalise


def test_normalise_folds_case_space_punctuation():
    assert normalise("  How LONG is the  notice-period?? ") == "how long is the notice period"


def test_exact_leak_found_without_embedder():
    leaks = find_leaks(["What is the Notice period?", "Unrelated"],
                       ["what is the notice  period"], embedder=None)
    assert [(leak.train_index, leak.test_index, leak.kind) for leak in leaks] == [(0, 0, "exact")]
    assert leaks[0].score == 1.0


def test_paraphrase_leak_found_and_distinct_question_not(embedder):
    train = ["How many days' notice must a landlord give before entering the flat?",
             "What is the capital of France?"]
    test = ["How many days of notice does a landlord have to give before entering the flat?"]
    leaks = find_leaks(train, test, embedder, threshold=0.9)
    assert [leak.train_index for leak in leaks] == [0]
    leak = leaks[0]
    assert leak.kind == "paraphrase" and 0.9 <= leak.score < 1.0
    assert leak.train_text == train[0] and leak.test_text == test[0]


def test_threshold_is_validated():
    with pytest.raises(ValueError):
        find_leaks(["a"], ["a"], None, threshold=0)


# -- generation ------------------------------------------------------------------------

import json  # noqa: E402

from agentcycle.examples import legal_corpus_dir  # noqa: E402
from agentcycle.finetune.dataprep import (  # noqa: E402
    generate_offline,
    generate_with_teacher,
    split_records,
    validate_dataset,
    write_card,
)
from agentcycle.finetune.dataprep.card import report_tables  # noqa: E402
from helpers import BackgroundServer, assert_clean_error, chat_app, cli_run  # noqa: E402


def test_offline_generator_turns_key_facts_into_grounded_questions():
    report = generate_offline(legal_corpus_dir())
    assert report.passages == 36 and len(report.records) >= 150
    by_question = {r["question"]: r for r in report.records}
    record = by_question["Each deduction above how many crowns must be supported by a written "
                         "quote or invoice?"]
    assert record["keywords"] == ["100 crowns"] and record["section"] == 12
    assert record["answer"] == "100 crowns (§ 12)."
    for r in report.records:  # the fact is in its evidence, and out of its question
        assert r["keywords"][0] in r["evidence"] and r["keywords"][0] not in r["question"]
    assert generate_offline(legal_corpus_dir()).records == report.records  # deterministic


def test_teacher_generator_keeps_valid_pairs_and_counts_bad_output(tmp_path):
    (tmp_path / "act.md").write_text(
        "# Act\n\n## § 9. Deposits\nThe landlord must lodge the deposit within 9 days.\n\n"
        "## § 10. Interest\nInterest is paid at 2% per year.\n", encoding="utf-8")
    good = [{"question": "How long does a landlord have to lodge a deposit?",
             "answer": "Within 9 days (§ 9).", "keywords": ["9 days"]},
            {"question": "Invented?", "answer": "30 days.", "keywords": ["30 days"]},
            {"question": "", "answer": "x", "keywords": ["x"]}]

    def respond(body):
        passage = body["messages"][-1]["content"]
        if "§ 10" in passage.split("Passage (", 1)[1][:8]:
            return {"content": "Sorry, I cannot help with that."}
        return {"content": "```json\n" + json.dumps(good) + "\n```"}

    from agentcycle.router import Router
    from agentcycle.router.backends import local_backend

    with BackgroundServer(chat_app(respond)) as server:
        router = Router([local_backend("teacher", server.url + "/v1", "teacher")],
                        log_path=False, tracing=False)
        report = generate_with_teacher(tmp_path, router, per_passage=2)
        router.close()
    assert [r["question"] for r in report.records] == [good[0]["question"]]
    assert report.records[0]["generator"] == "teacher" and report.records[0]["section"] == 9
    assert report.skipped == {"keyword not in the passage": 1, "missing question or answer": 1,
                              "reply not a JSON array": 1}
    assert report.teacher_calls == 2


def test_teacher_down_is_one_error(tmp_path):
    from helpers import dead_url

    with dead_url() as url:
        code, out = cli_run("data", "generate", str(legal_corpus_dir()), "--out",
                            str(tmp_path / "q.jsonl"), "--teacher", "t", "--teacher-url", url)
    assert_clean_error(code, out, "teacher model failed on every passage")
    assert not (tmp_path / "q.jsonl").exists()


def test_cli_generate_offline_then_validate_against_test_split(tmp_path):
    out = tmp_path / "gen.jsonl"
    code, text = cli_run("data", "generate", str(legal_corpus_dir()), "--out", str(out))
    assert code == 0, text
    assert len(out.read_text().splitlines()) >= 150


# -- validation, card, split -----------------------------------------------------------

def _write(path, lines):
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n",
                    encoding="utf-8")
    return path


def test_validate_reports_every_problem_with_its_line(tmp_path):
    data = _write(tmp_path / "d.jsonl", [
        {"question": "How long is the notice period?", "answer": "34 days (§ 29)."},
        "{not json",
        {"question": "How long is the notice period", "answer": "34 days (§ 29)"},
        {"question": "Q?", "answer": ""},
        {"prompt": [{"role": "user", "content": "Q"}],
         "chosen": [{"role": "assistant", "content": "Yes."}],
         "rejected": [{"role": "assistant", "content": "yes"}]},
        {"messages": [{"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": "Hello"}]},
        {"foo": 1},
    ])
    report = validate_dataset(data)
    problems = dict(report.problems)
    assert sorted(problems) == [2, 4, 5, 7]
    assert "malformed JSON" in problems[2] and "identical" in problems[5]
    assert report.duplicates == [(3, 1)] and report.records == 3 and not report.ok
    from rich.console import Console

    console = Console(width=80, record=True)
    for table in report_tables(report):
        console.print(table)
    assert max(len(line) for line in console.export_text().splitlines()) <= 80


def test_validate_finds_leak_and_writes_card(tmp_path, embedder):
    train = _write(tmp_path / "train.jsonl", [
        {"question": "How many days' notice must a landlord give before entering the flat?",
         "answer": "48 hours."},
        {"question": "What is the lodging fee?", "answer": "18 crowns."}])
    test = _write(tmp_path / "test.jsonl", [
        {"question": "How many days of notice does a landlord have to give before entering "
                     "the flat?", "answer": "48 hours."}])
    report = validate_dataset(train, against=test, embedder=embedder)
    assert [leak.train_index for leak in report.leaks] == [0] and not report.ok
    card = write_card(report, source="unit test", license="CC0")
    text = card.read_text()
    assert card.name == "train.card.md" and "1 training questions match" in text
    assert "CC0" in text and "| qa | 2 |" in text


def test_validate_with_tokenizer_checks_the_label_mask(tmp_path, base_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base_model_dir))
    data = _write(tmp_path / "d.jsonl", [{"question": "What is the fee?", "answer": "18 crowns."}])
    report = validate_dataset(data, tokenizer, max_length=512)
    assert report.label_mask == "checked" and report.length_unit == "tokens"
    assert report.answer_tokens and report.answer_tokens[0] > 0 and report.ok
    short = validate_dataset(data, tokenizer, max_length=8)  # the prompt fills it: no answer
    assert short.problems and not short.ok


def test_split_by_fact_keeps_paraphrases_together():
    records = [{"question": f"Q{i} variant {v}?", "answer": f"{i} days.",
                "keywords": [f"{i} days"], "section": i} for i in range(10) for v in range(3)]
    train, test = split_records(records, 0.3, by="fact", seed=1)
    assert len(test) == 9 and len(train) == 21
    assert not {r["section"] for r in train} & {r["section"] for r in test}
    with pytest.raises(Exception, match="empty split"):
        split_records(records, 0.0)


def test_cli_split_and_validate_errors(tmp_path):
    data = _write(tmp_path / "d.jsonl", [{"question": f"Q{i}?", "answer": f"A{i}."}
                                          for i in range(10)])
    code, out = cli_run("data", "split", str(data), "--test-size", "0.2")
    assert code == 0, out
    assert len((tmp_path / "d.test.jsonl").read_text().splitlines()) == 2
    assert len((tmp_path / "d.train.jsonl").read_text().splitlines()) == 8
    code, out = cli_run("data", "validate", str(tmp_path / "missing.jsonl"))
    assert_clean_error(code, out, "data file not found")
    bad = _write(tmp_path / "bad.jsonl", ["{oops"])
    code, out = cli_run("data", "split", str(bad))
    assert_clean_error(code, out, "malformed JSON")


def test_cli_split_never_writes_over_its_input_or_one_output_over_the_other(tmp_path):
    records = [{"question": f"Q{i}?", "answer": f"A{i}."} for i in range(10)]
    data = _write(tmp_path / "d.jsonl", records)
    before = data.read_text()
    code, out = cli_run("data", "split", str(data), "--train-out", str(data))
    assert_clean_error(code, out, "--train-out and the input are the same file")
    code, out = cli_run("data", "split", str(data), "--train-out", str(tmp_path / "s.jsonl"),
                        "--test-out", str(tmp_path / "." / "s.jsonl"))
    assert_clean_error(code, out, "--test-out and --train-out are the same file")
    # An output that is a folder fails before the other output is written.
    code, out = cli_run("data", "split", str(data), "--train-out", str(tmp_path))
    assert_clean_error(code, out, "is a directory")
    assert data.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl"]


def test_cli_data_paths_of_the_wrong_kind_are_named(tmp_path):
    data = _write(tmp_path / "d.jsonl", [{"question": "Q?", "answer": "A."}])
    code, out = cli_run("data", "validate", str(tmp_path))
    assert_clean_error(code, out, "is a directory; give a JSONL file")
    code, out = cli_run("data", "generate", str(data), "--out", str(tmp_path / "o.jsonl"))
    assert_clean_error(code, out, "is a file; give the folder")
    code, out = cli_run("data", "generate", str(tmp_path), "--teacher-url", "http://x/v1",
                        "--out", str(tmp_path / "o.jsonl"))
    assert_clean_error(code, out, "--teacher-url needs --teacher")
    code, out = cli_run("data", "validate", str(data), "--tokenizer", str(tmp_path / "none"))
    assert_clean_error(code, out, "tokenizer folder not found")
    (tmp_path / "empty").mkdir()
    code, out = cli_run("data", "validate", str(data), "--tokenizer", str(tmp_path / "empty"))
    assert_clean_error(code, out, "cannot load a tokenizer from")
    assert len(out.strip().splitlines()) == 1, out
    code, out = cli_run("data", "validate", str(data), "--max-length", "-5")
    assert code == 2 and "--max-length" in out
    assert not (tmp_path / "o.jsonl").exists()
