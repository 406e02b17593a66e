"""Answer forms and spread samples the demo's recipe trains on."""

import collections

import pytest

from agentcycle.demo import legal_tool_records_path
from agentcycle.examples import legal_split
from agentcycle.finetune import read_jsonl
from agentcycle.finetune.dataprep import (
    called_tool,
    quote_then_answer,
    sample_spread,
    supporting_clauses,
    with_answer_form,
)


def test_quote_then_answer_quotes_the_evidence_and_states_the_facts():
    record = {"question": "Deposit cap?", "answer": "1.5 months' rent (§ 9).", "section": 9,
              "keywords": ["1.5 months"],
              "evidence": "A deposit may not exceed 1.5 months' rent."}
    [quoted] = quote_then_answer([record])
    assert quoted["answer"] == ('§ 9: "A deposit may not exceed 1.5 months\' rent." '
                                'Answer: 1.5 months.')
    assert record["answer"] == "1.5 months' rent (§ 9)."  # the input is left as it was
    no_evidence = {"question": "q", "answer": "a"}
    assert quote_then_answer([no_evidence]) == [no_evidence]
    assert with_answer_form([record], "quote") == [quoted]
    assert with_answer_form([record], "short") == [record]


def test_a_long_sentence_is_cut_to_the_clauses_that_hold_the_facts():
    sentence = ("Tenancies that began before 1 March 2025 came under this Act on 1 September "
                "2025, after a transition period of 184 days during which the Lettings "
                "Ordinance of 1961 continued to apply to them, and no fee was charged for the "
                "change, whatever the rent.")
    cut = supporting_clauses(sentence, ["Lettings Ordinance of 1961"])
    assert cut == ("... after a transition period of 184 days during which the Lettings "
                   "Ordinance of 1961 continued to apply to them ...")
    # Facts in no clause run, or a short sentence: the sentence as it is.
    assert supporting_clauses(sentence, ["not there"]) == sentence
    assert supporting_clauses("Short.", ["x"]) == "Short."


def test_every_quoted_test_answer_fits_the_headline_scorers_cap():
    # The headline scorer fails answers over 40 words: the trained form must fit it.
    records = quote_then_answer(read_jsonl(legal_split("test")))
    lengths = [len(r["answer"].split()) for r in records]
    assert max(lengths) <= 41 and sum(n > 40 for n in lengths) <= 1
    assert all(k in r["answer"] for r in records for k in r["keywords"])


def test_a_spread_sample_holds_every_tool_and_answers_without_one():
    records = read_jsonl(legal_tool_records_path())
    assert collections.Counter(map(called_tool, records[:128]))[""] == 0  # why it exists
    sample = sample_spread(records, 128, called_tool, seed=7)
    counts = collections.Counter(map(called_tool, sample))
    assert len(sample) == 128 and len(counts) == 7 and min(counts.values()) >= 18
    assert sample == sample_spread(records, 128, called_tool, seed=7)
    assert sample != sample_spread(records, 128, called_tool, seed=8)
    assert sample_spread(records, None, called_tool) == records


def test_the_demo_refuses_an_unknown_answer_form_before_any_work(settings):
    from agentcycle.demo import DemoOptions, run_demo
    from agentcycle.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown answer form 'long': choose one of quote, short"):
        run_demo(settings, DemoOptions(answer_form="long"))
    assert not (settings.home / "demo").exists()


def test_the_full_recipe_trains_more_layers_unless_told_otherwise():
    from agentcycle.demo import DemoOptions
    from agentcycle.finetune import TrainParams

    assert DemoOptions().params.top_layers == 8
    assert DemoOptions.full().params.top_layers == 16
    assert DemoOptions.full(params=TrainParams(top_layers=4)).params.top_layers == 4
