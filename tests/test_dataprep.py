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
