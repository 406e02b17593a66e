"""The legal example's tools: plain typed functions a tool-calling agent is offered.

What tenants and landlords ask of the Marvale Residential Tenancy Act is mostly a
section to read, a deadline ("within 21 days after the tenancy ends", "at least 90 days
before") or an amount (the deposit cap, the rent-increase cap). Each tool's docstring is
its description (first paragraph) and its parameters' (``Args:``); a bad argument raises
:class:`LegalToolError` (a ``ValueError``) whose message tells the model how to fix it.

``search_corpus`` needs a vector store, so it comes bound from :func:`legal_tools`; the
others read the corpus files or compute, and are importable as they are.
"""

from __future__ import annotations

import calendar
import functools
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Literal

from agentcycle.errors import ConfigError
from agentcycle.examples.legal import legal_corpus_dir

_PART = re.compile(r"^#\s+(.+?)\s*$")
_SECTION = re.compile(r"^##\s+§\s*(\d+[a-z]?)\.\s*(.+?)\s*$")
_NUMBER = re.compile(r"^(?:§+|sections?|sec\.?|s\.)?\s*(\d+[a-z]?)\.?$", re.IGNORECASE)
_SECTION_ID = re.compile(r"§\s*(\d+[a-z]?)")
# The Act's thresholds (§ 3, § 8, § 16), in one place for the calculators.
PREMIUM_ANNUAL_RENT = 96_000
KEY_DEPOSIT_PER_SET = 60
MAX_TOP_K = 10


class LegalToolError(ConfigError, ValueError):
    """A tool argument the model can correct (the message says how)."""


@functools.cache
def _sections() -> dict[str, dict[str, str]]:
    """Every section of the corpus by number: {"8": {section, heading, part, text}}."""
    sections: dict[str, dict[str, str]] = {}
    for path in sorted(legal_corpus_dir().glob("*.md")):
        part, current = "", None
        for line in path.read_text(encoding="utf-8").splitlines():
            if match := _SECTION.match(line):
                number, title = match.groups()
                current = sections[number] = {
                    "section": f"§ {number}", "heading": f"§ {number}. {title}",
                    "title": title, "part": part, "text": ""}
            elif match := _PART.match(line):
                part, current = match.group(1), None
            elif current is not None:
                current["text"] += line + "\n"
    for entry in sections.values():
        entry["text"] = entry["text"].strip()
    return sections


def _range() -> str:
    numbers = sorted(int(re.sub(r"\D", "", n)) for n in _sections())
    return f"{numbers[0]}-{numbers[-1]}"


def get_section(number: str) -> dict:
    """Read one section of the Marvale Residential Tenancy Act in full.

    Use it when the question names a section, or to quote the exact rule.

    Args:
        number: The section number, e.g. "8" (also accepted: "§ 8", "section 8").
    """
    match = _NUMBER.match(str(number).strip())
    if not match:
        raise LegalToolError(f"'{number}' is not a section number: give one like '8' "
                             f"(sections are {_range()})")
    key = match.group(1).lower()
    section = _sections().get(key)
    if section is None:
        raise LegalToolError(f"no section {key}; sections are {_range()}")
    return dict(section)


def _parse_date(value: str, name: str) -> date:
    try:
        return date.fromisoformat(str(value).strip())
    except ValueError:
        raise LegalToolError(f"{name} must be an ISO date like 2025-03-01 "
                             f"(got '{value}')") from None


def _add_months(start: date, months: int) -> date:
    # 31 January + 1 month is the last day of February, as a calendar month is counted.
    month_index = start.month - 1 + months
    year, month = start.year + month_index // 12, month_index % 12 + 1
    return date(year, month, min(start.day, calendar.monthrange(year, month)[1]))


def _add_business_days(start: date, days: int) -> date:
    step, current, left = (1 if days > 0 else -1), start, abs(days)
    while left:
        current += timedelta(days=step)
        if current.weekday() < 5:  # Monday-Friday; the Act names no public holidays
            left -= 1
    return current


@dataclass(frozen=True)
class Deadline:
    """One of the Act's deadlines: its period from a start date, and where it is set."""

    section: str
    period: str  # as the Act words it, for the answer
    days: int = 0  # negative: counted back from the start date
    months: int = 0
    business_days: bool = False


# The Act's deadlines by name. The tool looks the period up, so a model only has to name
# the situation (which it reads off the question) rather than recall a number.
DEADLINES: dict[str, Deadline] = {
    "agreement_copy": Deadline("§ 4", "within 5 days of the tenant's signature", days=5),
    "tenancy_registration": Deadline("§ 5", "within 30 days of the start of the tenancy",
                                     days=30),
    "landlord_address_change": Deadline("§ 6", "within 22 days of the change", days=22),
    "deposit_lodging": Deadline("§ 9", "within 9 days of receiving the deposit", days=9),
    "deposit_return": Deadline("§ 11", "within 21 days after the tenancy ends", days=21),
    "dispute_evidence": Deadline("§ 14", "within 16 days of the referral", days=16),
    "adjudication_appeal": Deadline("§ 14", "within 11 days of the adjudicator's decision",
                                    days=11),
    "undisputed_deposit_release": Deadline("§ 14", "within 4 working days of the referral",
                                           days=4, business_days=True),
    "rent_increase_challenge": Deadline("§ 17", "within 42 days of receiving the notice",
                                        days=42),
    "rent_increase_notice": Deadline("§ 17", "at least 90 days before the increase takes "
                                     "effect", days=-90),
    "payment_plan_acceptance": Deadline("§ 19", "14 days to accept the plan", days=14),
    "repair_acknowledgement": Deadline("§ 24", "within 2 working days of the notice", days=2,
                                       business_days=True),
    "repair_completion": Deadline("§ 24", "within 32 days of the notice", days=32),
    "mould_inspection": Deadline("§ 27", "within 20 days of the report", days=20),
    "mould_works": Deadline("§ 27", "within 10 weeks (70 days) of the report", days=70),
    "tenant_notice": Deadline("§ 29", "at least 34 days' written notice", days=34),
    "landlord_notice": Deadline("§ 30", "4 months' notice on Form T-9", months=4),
    "tribunal_hearing": Deadline("§ 32", "within 56 days of the claim", days=56),
    "money_order_payment": Deadline("§ 34", "within 36 days of the order", days=36),
    "tribunal_appeal": Deadline("§ 34", "within 40 days of the written decision", days=40),
    "belongings_storage": Deadline("§ 36", "at least 44 days after the tenancy ends",
                                   days=44),
}
LONG_TERM_NOTICE_MONTHS = 7  # § 30, for a tenant of 7 years or more (§ 2)
# The names the model is offered (a JSON-schema enum), derived from the table so the two
# cannot drift; a static type checker cannot read it, the tool schema and pydantic can.
DeadlineRule = Literal[tuple(DEADLINES)]  # type: ignore[valid-type]


def compute_deadline(start_date: str, rule: DeadlineRule, long_term_tenant: bool = False) -> dict:
    """The last day of one of the Act's deadlines, counted from a start date, with the
    period and the section that sets it.

    Args:
        start_date: The day the period runs from (the move-out, the notice, the claim, the
            decision; for rent_increase_notice the day the increase takes effect), as an
            ISO date (YYYY-MM-DD).
        rule: Which deadline: the thing to be done, e.g. deposit_return for repaying a
            deposit after the tenancy ends, landlord_notice for a Form T-9 notice.
        long_term_tenant: For landlord_notice only: the tenant has lived there 7 years
            or more, which lengthens the notice.
    """
    start = _parse_date(start_date, "start_date")
    deadline = DEADLINES.get(str(rule))
    if deadline is None:
        raise LegalToolError(f"unknown rule '{rule}': use one of {', '.join(DEADLINES)}")
    if long_term_tenant and rule != "landlord_notice":
        raise LegalToolError("long_term_tenant is for rule landlord_notice only")
    period, months = deadline.period, deadline.months
    if long_term_tenant:  # landlord_notice, as checked above
        months = LONG_TERM_NOTICE_MONTHS
        period = f"{months} months' notice on Form T-9 for a long-term tenant"
    try:
        if months:
            end = _add_months(start, months)
        elif deadline.business_days:
            end = _add_business_days(start, deadline.days)
        else:
            end = start + timedelta(days=deadline.days)
    except (OverflowError, ValueError):
        raise LegalToolError("the deadline falls outside the calendar: check start_date") \
            from None
    return {"rule": rule, "section": deadline.section, "period": period,
            "start_date": start.isoformat(), "deadline": end.isoformat(),
            "weekday": calendar.day_name[end.weekday()]}


def days_between(start_date: str, end_date: str) -> dict:
    """The number of calendar days from one date to another (negative if it is earlier).

    For checking a notice or a delay, e.g. whether notice given on one date and ending
    on another is the 34 days § 29 asks of a tenant.

    Args:
        start_date: The earlier date, as an ISO date (YYYY-MM-DD).
        end_date: The later date, as an ISO date (YYYY-MM-DD).
    """
    start, end = _parse_date(start_date, "start_date"), _parse_date(end_date, "end_date")
    days = (end - start).days
    return {"start_date": start.isoformat(), "end_date": end.isoformat(), "days": days,
            "weeks": round(days / 7, 2)}


def _amount(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise LegalToolError(f"{name} must be a positive amount in crowns (got {value!r})")
    return float(value)


def _crowns(value: float) -> float | int:
    # Whole crowns read as 1500, not 1500.0: the model copies the figure into its answer.
    rounded = round(value, 2)
    return int(rounded) if rounded == int(rounded) else rounded


def max_deposit(monthly_rent: float, pets: bool = False) -> dict:
    """The largest security deposit a landlord may take for a monthly rent (§ 8).

    The cap is 1.5 months' rent, or 1.75 months' rent where the tenant keeps a cat or
    dog; a key deposit of at most 60 crowns per set of keys may be taken on top.

    Args:
        monthly_rent: The monthly rent in crowns.
        pets: Whether the tenant keeps a cat or dog in the dwelling.
    """
    rent = _amount(monthly_rent, "monthly_rent")
    months = 1.75 if pets else 1.5
    return {"monthly_rent": _crowns(rent), "pets": pets, "months_of_rent": months,
            "max_deposit": _crowns(rent * months),
            "max_key_deposit_per_set": KEY_DEPOSIT_PER_SET, "section": "§ 8"}


def max_rent_increase(current_rent: float, energy_band_b: bool = False,
                      major_works_approved: bool = False) -> dict:
    """The largest rent increase allowed on a monthly rent, and the new rent (§ 16).

    The cap is 4% of the current rent, 6% where the landlord has raised the dwelling to
    energy band B or better, and 11% where the Tribunal approved it after major works.
    A premium tenancy (annual rent above 96,000 crowns) has no cap (§ 3). The increase
    also needs 90 days' notice on Form T-5 (§ 17).

    Args:
        current_rent: The current monthly rent in crowns.
        energy_band_b: Whether the landlord raised the dwelling to energy band B or better.
        major_works_approved: Whether the Tribunal approved a larger increase after major
            works under § 22.
    """
    rent = _amount(current_rent, "current_rent")
    result: dict[str, Any] = {"current_rent": _crowns(rent), "notice_days": 90,
                              "section": "§ 16"}
    if rent * 12 > PREMIUM_ANNUAL_RENT:
        return result | {"capped": False, "max_percent": None, "max_increase": None,
                         "max_new_rent": None,
                         "note": "a premium tenancy (annual rent above 96,000 crowns) is "
                                 "exempt from the cap on rent increases (§ 3)"}
    percent = 11 if major_works_approved else 6 if energy_band_b else 4
    increase = rent * percent / 100
    return result | {"capped": True, "max_percent": percent,
                     "max_increase": _crowns(increase), "max_new_rent": _crowns(rent + increase)}


class _Search:
    """The corpus search, bound to one store and embedder (Qdrant local mode is not safe
    across threads, and a tool agent may call tools from a thread pool)."""

    def __init__(self, store: Any, embedder: Any):
        self.store, self.embedder = store, embedder
        self.lock = threading.Lock()

    def __call__(self, query: str, top_k: int) -> list[dict]:
        if not str(query).strip():
            raise LegalToolError("query is empty: say what to look for, e.g. "
                                 "'deposit return deadline'")
        if not 1 <= top_k <= MAX_TOP_K:
            raise LegalToolError(f"top_k must be between 1 and {MAX_TOP_K} (got {top_k})")
        with self.lock:
            vector = self.embedder.embed([str(query)])[0]
            # A long section is several chunks: ask for more, keep each section's best.
            hits = self.store.search(vector, top_k * 3)
        results: dict[str, dict] = {}
        for hit in hits:
            match = _SECTION_ID.search(hit.chunk.heading)
            section = f"§ {match.group(1)}" if match else hit.chunk.source
            if section not in results:
                results[section] = {"section": section, "heading": hit.chunk.heading,
                                    "text": hit.chunk.text, "score": round(hit.score, 4)}
        return list(results.values())[:top_k]


def legal_tools(settings: Any = None, *, embedder: Any = None) -> list[Callable[..., Any]]:
    """The legal example's tool set, ``search_corpus`` bound to the legal collection
    (ingested first if it is missing, as the ``rag:`` target does)."""
    from agentcycle.examples.legal import ensure_legal_collection
    from agentcycle.models import Embedder, embedding_model_dir
    from agentcycle.settings import Settings

    settings = settings or Settings()
    embedder = embedder or Embedder(embedding_model_dir(settings))
    search = _Search(ensure_legal_collection(settings, embedder=embedder), embedder)

    def search_corpus(query: str, top_k: int = 3) -> list[dict]:
        """Search the Marvale Residential Tenancy Act for the sections about a question.

        Use it for any question on tenancies (deposits, rent, repairs, entry, notice,
        the Tribunal) when the section is not known. Results come best first.

        Args:
            query: What to look for, in plain words, e.g. "deposit return deadline".
            top_k: How many sections to return (1 to 10).
        """
        return search(query, top_k)

    return [search_corpus, get_section, compute_deadline, days_between, max_deposit,
            max_rent_increase]


TOOL_NAMES = ("search_corpus", "get_section", "compute_deadline", "days_between",
              "max_deposit", "max_rent_increase")
