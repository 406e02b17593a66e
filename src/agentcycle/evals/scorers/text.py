"""Text scorers: exact match, contains, key facts, regex, JSON schema.

The plain helpers (``normalize``, ``keyword_match``, ``exact_match``) predate the scorer
registry and are still used directly by the Q&A runner and the demo.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

from agentcycle.errors import ConfigError
from agentcycle.evals.scoring import ScoreContext, scorer
from agentcycle.evals.types import Case, Output, Score

_DASHES = dict.fromkeys(map(ord, "\u2010\u2011\u2012\u2013\u2014\u2212"), "-")
_QUOTES = dict.fromkeys(map(ord, "\u2018\u2019\u201c\u201d"), "'")


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).translate(_DASHES).translate(_QUOTES).lower()
    return re.sub(r"\s+", " ", text).strip()


def keyword_match(answer: str, keywords: list[str]) -> bool:
    """Every key fact (a figure, a deadline, a name) appears in the answer."""
    if not keywords:
        return False
    text = normalize(answer)
    return all(normalize(k) in text for k in keywords)


def _strip_punctuation(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", "", normalize(text))).strip()


def exact_match(answer: str, reference: str) -> bool:
    return _strip_punctuation(answer) == _strip_punctuation(reference)


def verdict(passed: bool, explanation: str) -> Score:
    """A 0/1 score (the registry applies the threshold; ``passed`` is provisional)."""
    return Score(value=1.0 if passed else 0.0, passed=passed, explanation=explanation)


def fraction(hits: int, total: int, explanation: str) -> Score:
    value = hits / total if total else 0.0
    return Score(value=value, passed=value >= 1.0, explanation=explanation)


def _reference(case: Case, reference: str | None, scorer_name: str) -> str:
    text = reference if reference is not None else case.reference
    if text is None:
        raise ConfigError(f"scorer '{scorer_name}' needs a reference: case '{case.id}' has none")
    return text


@scorer("exact", threshold=1.0)
def exact(case: Case, output: Output, ctx: ScoreContext, *, reference: str | None = None,
          strict: bool = False) -> Score:
    """The answer equals the reference (ignoring case, spacing and punctuation unless
    ``strict``)."""
    expected = _reference(case, reference, "exact")
    same = output.text.strip() == expected.strip() if strict else exact_match(output.text, expected)
    return verdict(same, "equals the reference" if same else
                   f"differs from the reference {expected[:80]!r}")


@scorer("contains", threshold=1.0)
def contains(case: Case, output: Output, ctx: ScoreContext, *,
             value: str | list[str] | None = None, case_sensitive: bool = False,
             any_of: bool = False) -> Score:
    """The answer contains ``value`` (one string or several; default: the reference).
    Value: the share of strings found (with ``any_of``, 1 when any one is)."""
    needles = [value] if isinstance(value, str) else list(value or [])
    if not needles:
        needles = [_reference(case, None, "contains")]
    prepare = (lambda s: s) if case_sensitive else normalize
    text = prepare(output.text)
    missing = [n for n in needles if prepare(n) not in text]
    found = len(needles) - len(missing)
    if any_of:
        return verdict(found > 0, f"found {found} of {len(needles)}" if found else
                       f"none of {needles!r} found")
    return fraction(found, len(needles), "all found" if not missing else f"missing {missing!r}")


@scorer("keywords", threshold=1.0)
def keywords(case: Case, output: Output, ctx: ScoreContext, *,
             keywords: list[str] | None = None, max_words: int | None = None) -> Score:
    """Every key fact of ``case.keywords`` is in the answer (value: the share present).

    ``max_words`` caps the answer's length (longer scores 0): without it, an answer that
    pastes the whole retrieved passage contains every key fact and passes.
    """
    facts = list(keywords) if keywords is not None else case.keywords
    if not facts:
        raise ConfigError(f"scorer 'keywords' needs key facts: case '{case.id}' has none")
    words = len(output.text.split())
    if max_words is not None and words > max_words:
        return fraction(0, len(facts), f"answer too long: {words} words > {max_words}")
    text = normalize(output.text)
    missing = [k for k in facts if normalize(k) not in text]
    return fraction(len(facts) - len(missing), len(facts),
                    "every key fact present" if not missing else f"missing {missing!r}")


_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}


@scorer("regex", threshold=1.0)
def regex(case: Case, output: Output, ctx: ScoreContext, *, pattern: str | None = None,
          flags: str = "", full: bool = False, negate: bool = False) -> Score:
    """The answer matches ``pattern`` (searched anywhere; ``full`` for the whole answer;
    ``negate`` to require that it does not match). ``flags``: any of "imsx"."""
    compiled = _compile(pattern, flags)
    text = output.text.strip()
    match = compiled.fullmatch(text) if full else compiled.search(text)
    if negate:
        return verdict(match is None, "no match, as required" if match is None else
                       f"matched {match.group(0)[:60]!r} but must not")
    return verdict(match is not None, f"matched {match.group(0)[:60]!r}" if match else
                   f"no match for {pattern!r}")


def _compile(pattern: str | None = None, flags: str = "", **_: Any) -> re.Pattern:
    if not pattern:
        raise ConfigError("scorer 'regex' needs a pattern (regex(pattern=...))")
    try:
        return re.compile(pattern, sum(_FLAGS[f] for f in flags.lower()))
    except (re.error, KeyError) as exc:
        raise ConfigError(f"scorer 'regex': bad pattern or flags {pattern!r}/{flags!r}: "
                          f"{exc}") from None


regex.check = _compile  # type: ignore[attr-defined]  # a bad pattern fails before any call


def extract_json(text: str) -> Any:
    """The first JSON value in ``text``: the whole text, a fenced block, or the first
    ``{...}``/``[...]`` that parses. Raises ValueError when there is none."""
    candidates = [text.strip()]
    candidates += re.findall(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    decoder = json.JSONDecoder()
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except ValueError:
            continue
    for start, char in enumerate(text):
        if char in "{[":
            try:
                return decoder.raw_decode(text, start)[0]
            except ValueError:
                continue
    raise ValueError("no JSON found")


@scorer("json_schema", threshold=1.0)
def json_schema(case: Case, output: Output, ctx: ScoreContext, *,
                schema: dict[str, Any] | str | None = None) -> Score:
    """The answer is (or contains) JSON valid under ``schema`` (a dict, or a path to one)."""
    validator_class, schema = _validator(schema)
    try:
        data = extract_json(output.text)
    except ValueError:
        return verdict(False, "the answer holds no JSON")
    errors = sorted(validator_class(schema).iter_errors(data), key=lambda e: list(e.path))
    if errors:
        where = "/".join(map(str, errors[0].path)) or "(root)"
        return verdict(False, f"{len(errors)} schema error(s); first at {where}: "
                       f"{errors[0].message[:120]}")
    return verdict(True, "valid JSON for the schema")


def _validator(schema: dict[str, Any] | str | None = None, **_: Any) -> tuple[Any, dict]:
    """The schema's validator class and the schema, checked (a bad schema is the suite's
    error, not a failed answer)."""
    import jsonschema

    if schema is None:
        raise ConfigError("scorer 'json_schema' needs a schema (json_schema(schema=...))")
    if isinstance(schema, str):
        try:
            with open(schema, encoding="utf-8") as handle:
                schema = json.load(handle)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"scorer 'json_schema': cannot read schema {schema!r}: "
                              f"{exc}") from None
    if not isinstance(schema, dict | bool):
        raise ConfigError(f"scorer 'json_schema': a schema is a mapping, not {schema!r}")
    validator_class = jsonschema.validators.validator_for(schema)
    try:
        validator_class.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ConfigError(f"scorer 'json_schema': invalid schema: {exc.message}") from None
    return validator_class, schema


json_schema.check = _validator  # type: ignore[attr-defined]
