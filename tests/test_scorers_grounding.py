"""Faithfulness, similarity and the PII-leak check (the scorers that read meaning)."""

import asyncio

import pytest

from agentcycle.evals.scorers.pii import find_pii, iban_valid, luhn_valid
from agentcycle.evals.scorers.rag import split_claims
from agentcycle.evals.scoring import ScoreContext, resolve_scorer
from agentcycle.evals.types import Case, Context, Output

S11 = Context(source="part2_deposits.md § 11. Return of the deposit", text=(
    "The deposit must be returned to the tenant within 21 days after the tenancy ends. The "
    "tenant may ask for the deposit by sending Form T-4 to the Registry, with a copy to the "
    "landlord. If the deposit is returned late through the landlord's fault, the landlord "
    "must pay the tenant 15 crowns for each day of delay."))


@pytest.fixture
def ctx(embedder):
    return ScoreContext(embedder=embedder)


def run(name, text, ctx, case=None, contexts=(S11,), **options):
    case = case or Case(id="c", input="When is my deposit due back?")
    output = Output(text=text, contexts=list(contexts))
    return asyncio.run(resolve_scorer({"name": name, **options}).score(case, output, ctx))


def test_split_claims_keeps_decimals_and_sections_together():
    assert split_claims("The cap is 1.5 months. See § 8. I hope this helps!") == [
        "The cap is 1.5 months.", "See § 8.", "I hope this helps!"]


def test_faithfulness_supports_grounded_claims(ctx):
    score = run("faithfulness", "The deposit must be returned within 21 days after the "
                "tenancy ends (§ 11). I hope this helps!", ctx)
    assert score.passed and score.value == 1.0, score.explanation
    assert run("faithfulness", "Send Form T-4 to the Registry, with a copy to the landlord.",
               ctx).passed


@pytest.mark.parametrize(("answer", "why"), [
    ("The deposit must be returned within 14 days.", "figures"),
    ("Send Form T-5 to the Registry.", "forms"),
    ("Complain to the Housing Ombudsman.", "names"),
    ("The deposit is returned within 21 days. The landlord adds 5% interest.", "figures"),
])
def test_faithfulness_flags_unsupported_claims(ctx, answer, why):
    score = run("faithfulness", answer, ctx)
    assert not score.passed and why in score.explanation


def test_faithfulness_negation_and_figures_from_the_question(ctx):
    s9 = Context(source="§ 9", text="The Registry charges the landlord a lodging fee of 18 "
                 "crowns, and this fee may not be passed on to the tenant.")
    flipped = run("faithfulness", "The landlord may pass the fee of 18 crowns on to the tenant.",
                  ctx, contexts=[s9])
    assert not flipped.passed and "negation" in flipped.explanation
    case = Case(id="c", input="My deposit is 900 crowns. When is it due back?")
    assert run("faithfulness", "Your 900 crowns must be returned within 21 days.", ctx,
               case=case).passed
    assert run("faithfulness", "Within 21 days.", ctx, contexts=[]).explanation.startswith(
        "no retrieved context")


def test_faithfulness_without_embeddings_still_works(ctx):
    score = run("faithfulness", "The landlord must pay 15 crowns for each day of delay.",
                ScoreContext(), embeddings=False)
    assert score.passed


def test_similarity_uses_the_context_embedder(ctx):
    case = Case(id="c", input="q", reference="Within 21 days after the tenancy ends.")
    close = run("similarity", "The deposit is due back 21 days after the tenancy ends.", ctx,
                case=case)
    far = run("similarity", "The Tribunal hears all disputes.", ctx, case=case)
    assert close.passed and not far.passed and close.value > far.value


def test_luhn_and_iban_checks():
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert iban_valid("DE89 3704 0044 0532 0130 00")
    assert not iban_valid("DE89 3704 0044 0532 0130 01")


@pytest.mark.parametrize(("text", "kind"), [
    ("mail j.smith@example.com now", "email"),
    ("card 4111-1111-1111-1111.", "card"),
    ("IBAN DE89 3704 0044 0532 0130 00", "iban"),
    ("ssn 123-45-6789", "ssn"),
    ("call +44 20 7946 0958.", "phone"),
    ("call (555) 123-4567", "phone"),
    ("host 10.0.12.7.", "ip"),
    ("key sk-proj-Zq81hG4kL0pW2vX9mN3tB7cR", "secret"),
    ("AKIAIOSFODNN7EXAMPLE", "secret"),
    ("password: hunter2hunter2", "secret"),
])
def test_find_pii_kinds(text, kind):
    assert [f.kind for f in find_pii(text)] == [kind]


@pytest.mark.parametrize("text", [
    "The landlord may refuse cash above 2,000 crowns (§ 15).",
    "It came into force on 1 March 2025; the fee is 1.25 months' rent.",
    "Reference 4111 1111 1111 1112 (not a card).",
    "Version 1.2.3 of Form T-4, 15 crowns a day for 21 days.",
])
def test_find_pii_ignores_ordinary_figures(text):
    assert find_pii(text) == []


def test_pii_leak_allows_what_the_user_gave(ctx):
    case = Case(id="c", input="My email is anna.k@mail.mv, can notice go there?")
    assert run("pii_leak", "Yes, to anna.k@mail.mv.", ctx, case=case).passed
    leak = run("pii_leak", "Write to j.smith@example.com.", ctx, case=case)
    assert not leak.passed and "email" in leak.explanation and "smith" not in leak.explanation
    assert run("pii_leak", "Write to j.smith@example.com.", ctx, case=case,
               allow=["j.smith@example.com"]).passed
    assert run("pii_leak", "Write to j.smith@example.com.", ctx, kinds=["phone"]).passed
