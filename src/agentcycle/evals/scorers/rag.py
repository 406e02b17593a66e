"""RAG scorers: context precision and recall against reference sources, faithfulness.

- ``context_precision``: are the retrieved passages the relevant ones, relevant ones
  ranked first (RAGAS's rank-aware average precision over the retrieved list);
- ``context_recall``: the share of the case's reference sources that were retrieved;
- ``faithfulness``: the share of the answer's claims supported by the retrieved context.
  Deterministic by default (figures, names and negation must agree; then word overlap
  or MiniLM similarity with a context sentence); ``mode="judge"`` asks the LLM judge.
"""

from __future__ import annotations

import re

from agentcycle.errors import ConfigError
from agentcycle.evals.scorers.text import normalize
from agentcycle.evals.scoring import ScoreContext, scorer
from agentcycle.evals.types import Case, Output, Score


def _source_key(source: str) -> str:
    return re.sub(r"§\s*", "§ ", normalize(source))


def source_matches(source: str, reference: str) -> bool:
    """``reference`` ("§ 9") names ``source`` ("part2.md § 9. Protection of deposits"):
    equal, or present as a whole token run (so "§ 1" does not match "§ 11")."""
    src, ref = _source_key(source), _source_key(reference)
    if not ref:
        return False
    return src == ref or re.search(rf"(?<!\w){re.escape(ref)}(?!\w)", src) is not None


def _references(case: Case, name: str) -> list[str]:
    if not case.reference_sources:
        raise ConfigError(f"scorer '{name}' needs reference_sources: case '{case.id}' has none")
    return case.reference_sources


@scorer("context_precision", threshold=0.5)
def context_precision(case: Case, output: Output, ctx: ScoreContext) -> Score:
    """Average precision of the retrieved list: mean of precision@k over the ranks k
    that hold a relevant passage (1.0 when every relevant passage comes first)."""
    refs = _references(case, "context_precision")
    relevant = [any(source_matches(c.source, r) for r in refs) for c in output.contexts]
    if not relevant:
        return Score(value=0.0, passed=False, explanation="nothing retrieved")
    hits, total = 0, 0.0
    for rank, is_relevant in enumerate(relevant, start=1):
        if is_relevant:
            hits += 1
            total += hits / rank
    value = total / hits if hits else 0.0
    ranks = [i for i, r in enumerate(relevant, start=1) if r]
    return Score(value=value, passed=value >= 0.5,
                 explanation=f"relevant at ranks {ranks} of {len(relevant)}")


@scorer("context_recall", threshold=1.0)
def context_recall(case: Case, output: Output, ctx: ScoreContext) -> Score:
    """The share of reference sources found among the retrieved passages."""
    refs = _references(case, "context_recall")
    missing = [r for r in refs if not any(source_matches(c.source, r) for c in output.contexts)]
    value = (len(refs) - len(missing)) / len(refs)
    return Score(value=value, passed=not missing,
                 explanation="every reference source retrieved" if not missing
                 else f"not retrieved: {missing}")


# --- faithfulness --------------------------------------------------------------------

_STOP = set("""a an the of to in on for and or is are was were be been being by with as at
from that this these those it its their there which who whom what when where how if than
then so such any all each every no not nor only also can could may might must shall
should will would do does did has have had i you he she we they them his her our your
about into over under up out more less most least per one after before within until
same other own just very""".split())  # noqa: SIM905
_NEGATION = re.compile(r"\b(not|no|never|cannot|can't|mustn't|isn't|aren't|doesn't|don't|"
                       r"without|nor|neither|none)\b|n't\b")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_ENTITY = re.compile(r"\b(form\s+[a-z]-?\d+|§\s*\d+)", re.I)


def split_claims(text: str) -> list[str]:
    """The answer's sentences."""
    text = re.sub(r"\s+", " ", text).strip()
    parts = re.split(r"(?<=[.!?])\s+(?=[A-Z§(\"'])", text)
    return [p.strip() for p in parts if p and p.strip(" .;")]


# Sentences that state nothing about the case (courtesy, not claims).
_COURTESY = re.compile(r"^\W*(i hope (this|that) helps|hope (this|that) helps|let me know|"
                       r"feel free|thanks?( you)?|you're welcome|good luck|"
                       r"is there anything else)\b", re.I)


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def _content_words(text: str) -> set[str]:
    words = re.findall(r"[a-z]+", normalize(text))
    return {_stem(w) for w in words if w not in _STOP and len(w) > 2}


def _numbers(text: str) -> set[str]:
    return {n.replace(",", "") for n in _NUMBER.findall(text)}


def _entities(text: str) -> set[str]:
    return {re.sub(r"[\s-]+", "", e.lower()) for e in _ENTITY.findall(text)}


def _capitalized(claim: str) -> set[str]:
    """Proper names in the claim (capitalized words past its first word)."""
    words = re.findall(r"[A-Za-z]+", claim)[1:]
    return {w.lower() for w in words if w[0].isupper() and len(w) > 2
            and w.lower() not in _STOP}


def _negated(text: str) -> bool:
    return _NEGATION.search(normalize(text)) is not None


def _claim_support(claim: str, sentences: list[str], context_words: set[str],
                   context_text: str, allowed_numbers: set[str],
                   similarity: float | None, min_overlap: float, min_similarity: float
                   ) -> tuple[bool, str]:
    missing_entities = _entities(claim) - _entities(context_text)
    if missing_entities:
        return False, f"forms/sections not in the context: {sorted(missing_entities)}"
    missing_numbers = _numbers(claim) - allowed_numbers
    if missing_numbers:
        return False, f"figures not in the context: {sorted(missing_numbers)}"
    names = _capitalized(claim) - set(re.findall(r"[a-z]+", context_text.lower()))
    if names:
        return False, f"names not in the context: {sorted(names)}"
    words = _content_words(claim)
    if not words:
        return True, "no content to check"
    overlap = len(words & context_words) / len(words)
    best = max(sentences, key=lambda s: len(words & _content_words(s)))
    if _negated(claim) != _negated(best):
        return False, f"negation disagrees with the context ({best[:60]!r})"
    if overlap >= min_overlap:
        return True, f"word overlap {overlap:.2f}"
    if similarity is not None and similarity >= min_similarity:
        return True, f"similarity {similarity:.2f}"
    return False, f"word overlap {overlap:.2f}" + (
        f", similarity {similarity:.2f}" if similarity is not None else "")


def _context_sentences(output: Output) -> list[str]:
    sentences = []
    for context in output.contexts:
        sentences += split_claims(context.text)
    return sentences


def _best_similarities(ctx: ScoreContext, claims: list[str], sentences: list[str]) -> list[float]:
    from agentcycle.evals.scorers.semantic import get_embedder

    embedder = get_embedder(ctx)
    vectors = embedder.embed(claims + sentences)
    claim_vectors, sentence_vectors = vectors[: len(claims)], vectors[len(claims):]
    return [float((sentence_vectors @ v).max()) for v in claim_vectors]


async def _judge_faithfulness(case: Case, output: Output, ctx: ScoreContext,
                              model: str | None) -> Score:
    from agentcycle.evals.scorers.judge import ask_judge, judge_messages

    rubric = ("Faithfulness: every claim of the answer is supported by the context. Score "
              "5 if all claims are supported, 1 if any claim contradicts the context or "
              "states a figure, deadline or name the context does not give.")
    context = "\n".join(c.text for c in output.contexts)
    messages = judge_messages(case.question, output.text, rubric, None, context)
    return await ask_judge(ctx, messages, model)


@scorer("faithfulness", threshold=1.0)
async def faithfulness(case: Case, output: Output, ctx: ScoreContext, *,
                       mode: str = "deterministic", embeddings: bool = True,
                       min_overlap: float = 0.6, min_similarity: float = 0.75,
                       model: str | None = None) -> Score:
    """The share of the answer's claims supported by the retrieved context.

    A claim is unsupported when it states a figure, form, section or name absent from
    the context (and the question), or its negation disagrees with the closest context
    sentence; otherwise it is supported when ``min_overlap`` of its content words are in
    the context, or (with ``embeddings``) its MiniLM similarity to a context sentence
    reaches ``min_similarity``. ``mode="judge"`` asks the LLM judge instead.
    """
    if mode not in ("deterministic", "judge"):
        raise ConfigError(f"faithfulness mode must be 'deterministic' or 'judge', not {mode!r}")
    if not output.contexts or not any(c.text.strip() for c in output.contexts):
        return Score(value=0.0, passed=False, explanation="no retrieved context to check against")
    if mode == "judge":
        return await _judge_faithfulness(case, output, ctx, model)
    claims = [c for c in split_claims(output.text) if not _COURTESY.match(c)]
    if not claims:
        return Score(value=0.0, passed=False, explanation="empty answer")
    sentences = _context_sentences(output)
    context_text = "\n".join(f"{c.source}\n{c.text}" for c in output.contexts)
    context_words = _content_words(context_text)
    allowed = _numbers(context_text) | _numbers(case.question)
    sims = (_best_similarities(ctx, claims, sentences) if embeddings
            else [None] * len(claims))
    verdicts = [_claim_support(c, sentences, context_words, context_text, allowed, s,
                               min_overlap, min_similarity)
                for c, s in zip(claims, sims, strict=True)]
    unsupported = [f"{c[:50]!r}: {why}" for c, (ok, why) in zip(claims, verdicts, strict=True)
                   if not ok]
    value = (len(claims) - len(unsupported)) / len(claims)
    explanation = (f"{len(claims)} claim(s), all supported" if not unsupported else
                   f"{len(unsupported)} of {len(claims)} unsupported; " + "; ".join(unsupported))
    return Score(value=value, passed=not unsupported, explanation=explanation[:500])
