"""Context compression: the retrieved sections cut to the sentences closest to the
question, still grouped under (and citing) their sections."""

import pytest

from agentcycle.examples import LEGAL_COLLECTION, legal_corpus_dir, legal_split
from agentcycle.finetune import read_jsonl
from agentcycle.rag import Chunk, Hit, RagAgent, ingest
from agentcycle.rag.compress import SentenceCompressor, split_sentences
from agentcycle.router import Router
from agentcycle.router.backends import local_backend

DEPOSITS = Hit(Chunk(
    text="## § 9. Protection of deposits\nWithin 9 days of receiving a security deposit, the "
         "landlord must lodge it with the Registry. The Registry charges a lodging fee of 18 "
         "crowns.\n\nThe tenant may check the status of the deposit at any time.",
    source="part2.md", index=0, heading="§ 9. Protection of deposits"), score=0.5)
RENT = Hit(Chunk(
    text="## § 16. Rent increases\nRent may rise at most once in any 12-month period. No "
         "increase may take effect during the first 9 months of a tenancy.",
    source="part3.md", index=1, heading="§ 16. Rent increases"), score=0.4)


def kept(hits: list[Hit]) -> list[str]:
    """The sentences the hits keep, below each one's heading line."""
    return [s for h in hits for s in split_sentences(h.chunk.text.partition("\n")[2])]


def test_sentences_split_at_ends_and_paragraphs_but_not_inside_a_citation():
    text = "A claim under § 12. may be refused. Fees are 5 crowns!\n\nIs it late? Yes."
    assert split_sentences(text) == [
        "A claim under § 12. may be refused.", "Fees are 5 crowns!", "Is it late?", "Yes."]
    assert split_sentences("one line\nwrapped here.") == ["one line wrapped here."]
    assert split_sentences("   ") == []


def test_compression_keeps_the_answering_sentence_under_its_heading(embedder):
    compressor = SentenceCompressor(embedder, keep=1)
    question = embedder.embed(["How many days does the landlord have to lodge a deposit?"])[0]
    [hit] = compressor.compress(question, [DEPOSITS, RENT])
    assert hit.chunk.text == ("## § 9. Protection of deposits\nWithin 9 days of receiving a "
                              "security deposit, the landlord must lodge it with the Registry.")
    assert hit.chunk.heading == DEPOSITS.chunk.heading and hit.chunk.source == "part2.md"
    assert 0 < hit.score <= 1


def test_compression_groups_kept_sentences_by_section_best_first(embedder):
    compressor = SentenceCompressor(embedder, keep=3)
    question = embedder.embed(["Can my rent go up in the first months of the tenancy?"])[0]
    hits = compressor.compress(question, [DEPOSITS, RENT])
    assert hits[0].chunk.heading == "§ 16. Rent increases"  # the best sentence's section
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert len(kept(hits)) == 3 and "No increase may take effect during the first 9 months " \
        "of a tenancy." in kept(hits)
    # Every kept sentence is verbatim from its own section.
    for hit in hits:
        source = DEPOSITS if hit.chunk.source == "part2.md" else RENT
        for sentence in kept([hit]):
            assert sentence in " ".join(source.chunk.text.split())


def test_a_sentence_two_overlapping_chunks_share_is_kept_once(embedder):
    overlap = Hit(Chunk(text="## § 9. Protection of deposits\nThe Registry charges a lodging "
                             "fee of 18 crowns. It is paid by the landlord.",
                        source="part2.md", index=1, heading="§ 9. Protection of deposits"), 0.4)
    question = embedder.embed(["What lodging fee does the Registry charge?"])[0]
    hits = SentenceCompressor(embedder, keep=2).compress(question, [DEPOSITS, overlap])
    assert kept(hits).count("The Registry charges a lodging fee of 18 crowns.") == 1
    assert len(kept(hits)) == 2


def test_compression_passes_hits_without_sentences_through_and_rejects_keep_zero(embedder):
    empty = Hit(Chunk(text="## § 1. Title\n", source="a.md", index=0, heading="§ 1."), 0.3)
    question = embedder.embed(["anything"])[0]
    assert SentenceCompressor(embedder, keep=2).compress(question, [empty]) == [empty]
    with pytest.raises(ValueError, match="keep must be at least 1"):
        SentenceCompressor(embedder, keep=0)


def test_a_compressing_agent_keeps_the_cited_sentence_in_a_shorter_context(settings, embedder):
    ingest(legal_corpus_dir(), LEGAL_COLLECTION, settings, embedder=embedder)
    router = Router([local_backend("x", "http://x/v1", "m")])  # retrieval calls no model
    whole = RagAgent(settings, LEGAL_COLLECTION, router, embedder=embedder, top_k=1)
    cut = RagAgent(settings, LEGAL_COLLECTION, router, embedder=embedder, top_k=2,
                   keep_sentences=3)
    cases = read_jsonl(legal_split("validation"))
    found_whole = found_cut = chars_whole = chars_cut = 0
    for case in cases:
        evidence = " ".join(case["evidence"].split())
        whole_text = " ".join(h.chunk.text for h in whole.retrieve(case["question"]))
        cut_hits = cut.retrieve(case["question"])
        cut_text = " ".join(h.chunk.text for h in cut_hits)
        assert 1 <= len(cut_hits) <= 2 and all(h.chunk.heading for h in cut_hits)
        found_whole += evidence in " ".join(whole_text.split())
        found_cut += evidence in " ".join(cut_text.split())
        chars_whole, chars_cut = chars_whole + len(whole_text), chars_cut + len(cut_text)
    # Three sentences from the top two sections hold the cited sentence about as often as
    # the whole top section does, in a shorter context (headings repeat per section).
    assert found_cut >= found_whole - 2 and found_cut / len(cases) >= 0.6
    assert chars_cut < 0.9 * chars_whole
