"""Progress for long work: Rich bars in a terminal, plain lines in a log.

A log (CI, ``kubectl logs``, a file) gets a line when a phase starts, at each quarter of
a counted phase, and when it ends, with the time it took: Rich's live bars would leave
nothing there until the very end.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def phase_progress(console: Console) -> Any:
    """A context manager with Rich Progress's ``add_task``/``update``."""
    if console.is_terminal:
        return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console)
    return LineProgress(console)


@dataclass
class _Phase:
    description: str
    total: float | None
    started: float = field(default_factory=time.perf_counter)
    completed: float = 0
    quarter: int = 0
    done: bool = False


class LineProgress:
    def __init__(self, console: Console):
        self.console = console
        self.phases: list[_Phase] = []

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def add_task(self, description: str, total: float | None = None, **_: Any) -> int:
        self.phases.append(_Phase(description, total))
        self.console.print(f"- {description} ...", highlight=False)
        return len(self.phases) - 1

    def update(self, task: int, *, completed: float | None = None, total: float | None = None,
               description: str | None = None, **_: Any) -> None:
        phase = self.phases[task]
        phase.total = total if total is not None else phase.total
        phase.completed = completed if completed is not None else phase.completed
        # A description that changes every step (a loss) is shown at the quarters only.
        phase.description = description or phase.description
        if phase.done or not phase.total:
            return
        share = phase.completed / phase.total
        if share >= 1:
            phase.done = True
            self.console.print(f"  {phase.description}: done, {phase.completed:g}/"
                               f"{phase.total:g} in {time.perf_counter() - phase.started:.0f} s",
                               highlight=False)
        elif phase.total >= 8 and int(share * 4) > phase.quarter:
            phase.quarter = int(share * 4)
            self.console.print(f"  {phase.description}: {phase.completed:g}/{phase.total:g} "
                               f"({time.perf_counter() - phase.started:.0f} s)", highlight=False)
