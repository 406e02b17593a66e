"""Planners split a task into subtasks: ``planner(task) -> list[str]``.

The default is deterministic (no model): a numbered or bulleted list, several
questions, or "X and Y?" each become a sub-question. :class:`LLMPlanner` asks a model
through the router, and falls back to the deterministic split when its answer is unusable.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Planner = Callable[[str], list[str]]

_ITEM = re.compile(r"^\s*(?:\d+[.)]|[-*\u2022])\s+(.*\S)\s*$")
_QUESTION = re.compile(r"[^?]*\?")
_AND = re.compile(r",\s*(?:and\s+)?|\s+and\s+(?=(?:what|how|when|where|who|which|why|is|"
                  r"are|can|does|do|must|may|should)\b)", re.IGNORECASE)


def split_questions(task: str) -> list[str]:
    """Sub-questions of ``task``, in order; the task itself when it is one question."""
    text = task.strip()
    if not text:
        return []
    items = [m.group(1) for line in text.splitlines() if (m := _ITEM.match(line))]
    if len(items) > 1:
        return items
    questions = [q.strip() for q in _QUESTION.findall(text) if q.strip(" ?")]
    if len(questions) > 1:
        return questions
    if text.endswith("?"):
        parts = [p.strip(" ?") for p in _AND.split(text.rstrip("?")) if p.strip(" ?")]
        if len(parts) > 1:
            return [p[0].upper() + p[1:] + "?" for p in parts]
    return [text]


class LLMPlanner:
    """Ask the model for the sub-questions, one per line (at most ``max_subtasks``)."""

    PROMPT = ("Split the user's request into at most {n} independent sub-questions that "
              "together answer it. Reply with the sub-questions only, one per line.")

    def __init__(self, router: Any, max_subtasks: int = 4, max_tokens: int = 128):
        self.router, self.max_subtasks, self.max_tokens = router, max_subtasks, max_tokens
        self.last_completion: Any = None  # its usage, for the multi-agent's totals

    def __call__(self, task: str) -> list[str]:
        messages = [{"role": "system", "content": self.PROMPT.format(n=self.max_subtasks)},
                    {"role": "user", "content": task}]
        self.last_completion = self.router.complete(messages, max_tokens=self.max_tokens,
                                                    temperature=0)
        lines = [(_ITEM.match(line).group(1) if _ITEM.match(line) else line).strip()
                 for line in self.last_completion.text.splitlines()]
        subtasks = [line for line in lines if len(line) > 3][: self.max_subtasks]
        return subtasks or split_questions(task)
