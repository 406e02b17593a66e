"""The agent's prompt. Fine-tuning builds its examples with this same function, so
the tuned model learns exactly the prompt it will be served."""

from __future__ import annotations

from agentcycle._untrusted import DATA_RULE, fenced
from agentcycle.rag.store import Hit

SYSTEM_PROMPT = (
    "You answer questions using only the numbered context passages. "
    "Reply in one short sentence that states the exact figure, deadline or name, "
    "and cite the section. " + DATA_RULE
)


def format_context(hits: list[Hit]) -> str:
    """The numbered passages inside one ``<passages>`` fence: retrieved text is data,
    and a passage cannot close the fence (see :mod:`agentcycle._untrusted`)."""
    return fenced("passages", "\n\n".join(
        f"[{i}] {hit.chunk.text}" for i, hit in enumerate(hits, start=1)))


def build_messages(question: str, hits: list[Hit]) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"Context:\n{format_context(hits)}\n\nQuestion: {question}"},
    ]
