from agentcycle.evals import load_cases
from agentcycle.examples import LEGAL_COLLECTION, legal_corpus_dir, legal_split
from agentcycle.rag import ChunkStore, RagAgent, ingest
from agentcycle.router import Router
from agentcycle.router.backends import local_backend


def test_ingest_and_retrieve_the_right_section(settings, embedder):
    report = ingest(legal_corpus_dir(), LEGAL_COLLECTION, settings, embedder=embedder)
    assert report.documents >= 5 and report.chunks >= 30
    store = ChunkStore(settings, LEGAL_COLLECTION)
    assert store.count() == report.chunks
    agent = RagAgent(settings, LEGAL_COLLECTION, Router([local_backend("x", "http://x/v1", "m")]),
                     embedder=embedder)
    cases = load_cases(legal_split("validation"))
    hits_at_3 = 0
    for case in cases:
        hits = agent.retrieve(case.question)
        assert len(hits) == 3 and hits[0].score >= hits[-1].score
        assert all(h.chunk.source.endswith(".md") and h.chunk.heading for h in hits)
        hits_at_3 += any(h.chunk.heading.startswith(f"§ {case.section}.") for h in hits)
    # MiniLM finds the cited section in the top 3 for most questions.
    assert hits_at_3 / len(cases) >= 0.7


def test_reingest_replaces_the_collection(settings, embedder, tmp_path):
    (tmp_path / "a.md").write_text("# A\n\n## § 1. One\nFirst.\n\n## § 2. Two\nSecond.\n")
    assert ingest(tmp_path, "c", settings, embedder=embedder).chunks == 2
    (tmp_path / "a.md").write_text("# A\n\n## § 1. One\nOnly.\n")
    assert ingest(tmp_path, "c", settings, embedder=embedder).chunks == 1
    assert ChunkStore(settings, "c").count() == 1


def test_the_agent_answers_with_citations_through_the_real_server(legal_agent):
    answer = legal_agent.ask("What is the maximum security deposit a landlord may demand?")
    assert answer.answer and answer.model == "base" and answer.backend == "base"
    assert len(answer.sources) == 3 and answer.sources[0].source.endswith(".md")
    assert answer.prompt_tokens > 50 and 0 < answer.completion_tokens <= 32
    assert answer.latency_ms > 0 and answer.cost_usd == 0.0
