"""Cases from data files (JSONL, CSV) and from recorded agent traces (MLflow).

A file's records are mapped onto case fields by ``fields``: a record key
(``input: question``) or a template over the record (``reference_sources: "§ {section}"``).
Without a mapping, record keys named like case fields are taken as they are, and
``question``/``answer`` stand in for ``input``/``reference``.
"""

from __future__ import annotations

import csv
import json
import string
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentcycle.errors import DataError
from agentcycle.evals.types import Case

_LIST_FIELDS = {"keywords", "reference_sources", "tags", "expected_tools"}
_CASE_FIELDS = set(Case.model_fields)
_ALIASES = {"input": "question", "reference": "answer"}


class TracesSpec(BaseModel):
    """Cases from the newest recorded agent runs (the trace store of agentcycle.observe)."""

    model_config = ConfigDict(extra="forbid")

    experiment: str | None = None  # default: the settings' experiment
    last: int = Field(50, ge=1)
    name: str | None = None  # only traces whose root span has this name
    reference_from_output: bool = False  # the recorded answer becomes the reference
    tags: list[str] = Field(default_factory=list)


def load_dataset(path: Path, fields: dict[str, str], tags: list[str],
                 limit: int | None = None) -> list[Case]:
    """Cases from a JSONL or CSV file; errors name the file, the line and the field."""
    unknown = set(fields) - _CASE_FIELDS
    if unknown:
        raise DataError(f"{path}: 'fields' maps unknown case fields {sorted(unknown)} "
                        f"(known: {', '.join(sorted(_CASE_FIELDS))})")
    records = _read_records(path)[:limit]
    if path.suffix.lower() == ".csv" and records:
        _check_columns(path, fields, records[0][1])
    cases = []
    for line, record in records:
        data = _map_record(record, fields, path, line)
        data["tags"] = [*data.get("tags", []), *tags]
        data.setdefault("id", f"{path.stem}-{line}")
        try:
            cases.append(Case.model_validate(data))
        except ValidationError as exc:
            error = exc.errors()[0]
            field = ".".join(str(p) for p in error["loc"])
            raise DataError(f"{path}:{line}: case '{data['id']}': field '{field}': "
                            f"{error['msg']}") from None
    return cases


def _read_records(path: Path) -> list[tuple[int, dict[str, Any]]]:
    try:
        return _read(path)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def _read(path: Path) -> list[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise DataError(f"dataset file not found: {path}")
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            # Line 1 is the header, so the first record is on line 2.
            reader = csv.DictReader(handle)
            try:
                rows = []
                for n, row in enumerate(reader, 2):
                    if None in row:  # DictReader keeps the extra cells under None
                        raise DataError(f"{path}:{reader.line_num}: more cells than the "
                                        "header has columns")
                    rows.append((n, _parse_cells(row)))
                return rows
            except csv.Error as exc:  # a field over the csv module's limit, a NUL ...
                raise DataError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from None
    if path.suffix.lower() not in (".jsonl", ".json"):
        raise DataError(f"{path}: datasets are .jsonl or .csv files")
    from agentcycle._jsonl import read_jsonl

    return [(record.pop("_line"), record) for record in read_jsonl(path)]


def _check_columns(path: Path, fields: dict[str, str], first: dict[str, Any]) -> None:
    """A CSV's header is fixed: a mapping to a column it lacks is a typo, said once."""
    for name, source in fields.items():
        names = ([n for _, n, _, _ in string.Formatter().parse(source) if n]
                 if "{" in source else [source])
        missing = [n for n in names if n not in first]
        if missing:
            raise DataError(f"{path}:1: field '{name}' maps to column '{missing[0]}', which "
                            f"the header lacks (columns: {', '.join(first)})")


def _parse_cells(row: dict[str, str | None]) -> dict[str, Any]:
    """CSV cells are text: JSON lists/objects are parsed, 'a|b' stays text until mapped."""
    parsed: dict[str, Any] = {}
    for key, value in row.items():
        text = (value or "").strip()
        if text[:1] in "[{":
            try:
                parsed[key] = json.loads(text)
                continue
            except (json.JSONDecodeError, RecursionError):
                pass
        parsed[key] = text
    return parsed


def _map_record(record: dict[str, Any], fields: dict[str, str], path: Path,
                line: int) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for name in _CASE_FIELDS:
        source = fields.get(name) or (name if name in record else _ALIASES.get(name))
        if source is None:
            continue
        value = _template(source, record, path, line) if "{" in source else record.get(source)
        if value in (None, ""):
            continue
        if name in _LIST_FIELDS and isinstance(value, str):
            value = [v.strip() for v in value.split("|") if v.strip()]
        if name == "id":
            value = str(value)
        data[name] = value
    used = {fields.get(n) or n for n in data} | set(_ALIASES.values())
    extra = {k: v for k, v in record.items() if k not in used and k not in _CASE_FIELDS}
    data["metadata"] = {**extra, **data.get("metadata", {})}
    return data


def _template(template: str, record: dict[str, Any], path: Path, line: int) -> str | None:
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name]
        if any(record.get(name) in (None, "") for name in names):
            return None  # "§ {section}" of a record without a section: no source
        return template.format(**record)
    except (KeyError, IndexError, ValueError) as exc:
        raise DataError(f"{path}:{line}: field template '{template}': {exc}") from None


def load_traces(spec: TracesSpec) -> list[Case]:
    """The newest recorded agent runs as cases: what users really asked."""
    import mlflow

    from agentcycle.observe.tracing import setup_tracking
    from agentcycle.settings import Settings

    settings = Settings()
    experiment_id = setup_tracking(settings)
    if spec.experiment:
        experiment = mlflow.get_experiment_by_name(spec.experiment)
        if experiment is None:
            raise DataError(f"traces: no MLflow experiment named '{spec.experiment}'")
        experiment_id = experiment.experiment_id
    traces = mlflow.search_traces(locations=[experiment_id], max_results=spec.last * 4,
                                  order_by=["timestamp_ms DESC"], return_type="list")
    cases = []
    for trace in traces:
        root = next((s for s in trace.data.spans if s.parent_id is None), None)
        question = _text(root.inputs if root else None, "question")
        if not question or (spec.name and root.name != spec.name):
            continue
        answer = _text(root.outputs, "answer") if spec.reference_from_output else None
        cases.append(Case(id=f"trace-{trace.info.trace_id[-12:]}", input=question,
                          reference=answer or None, tags=["trace", *spec.tags],
                          metadata={"trace_id": trace.info.trace_id}))
        if len(cases) == spec.last:
            break
    if not cases:
        raise DataError("traces: no recorded agent runs with a question were found")
    return cases


def _text(value: Any, key: str) -> str:
    if isinstance(value, dict):
        value = value.get(key)
    return value.strip() if isinstance(value, str) else ""
