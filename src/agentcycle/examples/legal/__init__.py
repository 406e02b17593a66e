"""The legal example: the Residential Tenancy Act of the (fictional) Free Province of
Marvale, and question/answer pairs split train / validation / test.

The test split is for evaluation only: nothing in agentcycle trains on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from agentcycle.errors import DataError

LEGAL_COLLECTION = "marvale-tenancy"
_HERE = Path(__file__).parent
Split = Literal["train", "validation", "test"]


def legal_corpus_dir() -> Path:
    return _HERE / "corpus"


def legal_split(split: Split) -> Path:
    if split not in ("train", "validation", "test"):
        raise DataError(f"unknown split '{split}': use train, validation or test")
    return _HERE / "qa" / f"{split}.jsonl"
