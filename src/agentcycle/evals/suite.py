"""Suites: a YAML file of cases (inline, from JSONL/CSV, or from recorded traces), the
scorers that judge them, a default target and the gates a run must pass.

Every error names the file, the case (its id, or its index), the field and the line:
a suite is edited by hand, and a typo must neither pass silently nor cost a search.

```yaml
name: legal-test
dataset: {path: ../qa/test.jsonl, fields: {input: question, reference: answer}}
cases:
  - {id: c1, input: "What is the deposit cap?", keywords: ["1.5 months"], tags: [deposits]}
scorers: [keywords, {name: context_recall, threshold: 1.0}, my_scorers.py:cites_a_section]
target: "openai:http://127.0.0.1:8000/v1#base"
gates: ["accuracy>=0.2"]
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from agentcycle._yaml import YamlDoc, load_yaml_file, relevant_errors
from agentcycle.errors import ConfigError, DataError
from agentcycle.evals.datasets import TracesSpec, load_dataset, load_traces
from agentcycle.evals.scorers import resolve_scorer  # (registers the built-ins)
from agentcycle.evals.scoring import BoundScorer
from agentcycle.evals.types import Case

ScorerSpec = str | dict[str, Any]


class DatasetSpec(BaseModel):
    """Cases from a JSONL or CSV file, its columns mapped onto case fields."""

    model_config = ConfigDict(extra="forbid")

    path: str  # relative to the suite file
    # case field -> record field, or a template over the record such as "§ {section}"
    fields: dict[str, str] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)  # added to every case of this file
    limit: int | None = Field(None, ge=1)  # [:0] or [:-1] would drop cases silently


class Suite(BaseModel):
    """A named set of cases with their scorers, default target and gates."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    cases: list[Case] = Field(default_factory=list)
    dataset: DatasetSpec | list[DatasetSpec] | None = None
    traces: TracesSpec | None = None
    scorers: list[ScorerSpec] = Field(default_factory=list)
    target: str | None = None
    gates: list[str] = Field(default_factory=list)
    # Suite-wide pass marks by scorer name (a case's own thresholds still win).
    thresholds: dict[str, float] = Field(default_factory=dict)
    # The judge model for LLM-judged scorers, as a target string ("openai:URL#model").
    judge: str | None = None
    path: Path | None = Field(default=None, exclude=True)  # where it was loaded from
    _doc: YamlDoc | None = PrivateAttr(None)  # its YAML, to name the line of an error

    def bound_scorers(self) -> list[BoundScorer]:
        """The suite's scorers, resolved through the registry, the ``agentcycle.scorers``
        entry points or ``module:function`` refs (a file beside the suite), with its
        thresholds."""
        bound = []
        base_dir = self.path.parent if self.path else None
        for index, spec in enumerate(self.scorers):
            try:
                scorer = resolve_scorer(spec, base_dir)
            except ConfigError as exc:
                where = self._doc.where(("scorers", index)) if self._doc else (
                    self.path or self.name)
                raise ConfigError(f"{where}: scorers[{index}]: {exc}") from None
            if scorer.name in self.thresholds and not (isinstance(spec, dict)
                                                       and "threshold" in spec):
                scorer.threshold = self.thresholds[scorer.name]
            if any(b.name == scorer.name for b in bound):  # e.g. two 'contains' checks
                scorer.name = f"{scorer.name}_{sum(b.fn is scorer.fn for b in bound) + 1}"
            bound.append(scorer)
        if not bound:
            raise ConfigError(f"{self.path or self.name}: the suite lists no scorers")
        return bound

    def limited(self, limit: int | None) -> Suite:
        """The same suite on its first ``limit`` cases (a quick run)."""
        return self if limit is None else self.model_copy(update={"cases": self.cases[:limit]})

    def sampled(self, size: int | None) -> Suite:
        """The same suite on ``size`` cases spread evenly over it: a quick run that keeps
        the suite's mix (its no-call cases, its later sections), unlike ``limited``."""
        if size is None or size >= len(self.cases):
            return self
        step = len(self.cases) / size
        return self.model_copy(update={"cases": [self.cases[int(i * step)]
                                                 for i in range(size)]})


def load_suite(path: str | Path) -> Suite:
    """Parse and validate a suite file, loading its dataset files and traces."""
    file = Path(path)
    if not file.is_file():
        raise DataError(f"suite file not found: {path}")
    doc = load_yaml_file(file, error=DataError)
    data = doc.data
    if not isinstance(data, dict):
        raise DataError(f"{file}: a suite is a YAML mapping with at least 'name' and 'scorers'")
    try:
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        # The first errors, each with its line: a typo ('inptu') often comes with a
        # missing field ('input'), and naming both says what happened.
        raise DataError("; ".join(_describe(doc, e)
                                  for e in relevant_errors(exc.errors(), doc)[:3])) from None
    suite.path = file
    suite._doc = doc
    cases = list(suite.cases)
    for spec in _as_list(suite.dataset):
        cases += load_dataset(file.parent / spec.path, spec.fields, spec.tags, spec.limit)
    if suite.traces:
        try:
            cases += load_traces(suite.traces)
        except DataError as exc:
            raise DataError(f"{file}: {exc}") from None  # which suite asked for them
    _check_unique(file, cases)
    if not cases:
        raise DataError(f"{file}: the suite has no cases (add 'cases:', 'dataset:' or 'traces:')")
    suite.cases = cases
    return suite


def _as_list(spec: DatasetSpec | list[DatasetSpec] | None) -> list[DatasetSpec]:
    return [] if spec is None else spec if isinstance(spec, list) else [spec]


def _check_unique(file: Path, cases: list[Case]) -> None:
    seen: set[str] = set()
    for index, case in enumerate(cases):
        if case.id in seen:
            raise DataError(f"{file}: case {index} (id '{case.id}'): duplicate case id")
        seen.add(case.id)


def _describe(doc: YamlDoc, error: dict) -> str:
    """file:line: case N (id 'x'): field 'input': message."""
    loc = error["loc"]
    field = loc
    prefix = ""
    if len(loc) >= 2 and loc[0] == "cases" and isinstance(loc[1], int):
        raw = doc.data.get("cases") or []
        case_id = raw[loc[1]].get("id") if loc[1] < len(raw) and isinstance(
            raw[loc[1]], dict) else None
        prefix = f"case {loc[1]}" + (f" (id '{case_id}')" if case_id else "") + ": "
        field = loc[2:]
    name = ".".join(str(p) for p in field) or "(the case itself)"
    message = "unknown field (a typo?)" if error["type"] == "extra_forbidden" else error["msg"]
    return f"{doc.where(loc)}: {prefix}field '{name}': {message}"
