"""Question/answer datasets: one JSONL line per case, validated with line numbers."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from agentcycle._jsonl import read_jsonl
from agentcycle.errors import DataError


class QACase(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    question: str
    answer: str
    keywords: list[str] = []
    section: int | str | None = None


def load_cases(path: str | Path) -> list[QACase]:
    cases = []
    for record in read_jsonl(path):
        try:
            cases.append(QACase.model_validate(record))
        except ValidationError as exc:
            error = exc.errors()[0]
            field = ".".join(str(p) for p in error["loc"])
            raise DataError(f"{path}:{record['_line']}: field '{field}': {error['msg']}") from None
    return cases
