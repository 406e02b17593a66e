"""Training data: JSONL of chat messages or question/answer pairs, validated.

Two accepted line shapes:
- ``{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}``
  ending with an assistant message (the target);
- ``{"question": "...", "answer": "..."}``: the prompt is built exactly as the RAG
  agent builds it, retrieved context included, when a retriever is given.

A ``messages`` record that offers ``tools`` or holds tool calls (the OpenAI fine-tuning
format) gives one example per assistant turn, rendered as the serving gate renders it
(:func:`agentcycle.finetune.dataprep.toolcalls.tool_record_to_examples`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentcycle._jsonl import read_jsonl  # noqa: F401  (public here: finetune.read_jsonl)
from agentcycle.errors import DataError
from agentcycle.rag.prompt import build_messages

Example = dict[str, list[dict[str, str]]]  # {"prompt": [...], "completion": [...]}
_ROLES = {"system", "user", "assistant"}


def to_examples(records: list[dict[str, Any]], path: str | Path = "data",
                retrieve: Callable[[str], list] | None = None,
                require_support: bool = False) -> list[Example]:
    """Validated prompt/completion pairs in the conversational format TRL trains on.

    With ``require_support``, a question/answer pair whose ``keywords`` (its key facts)
    are not all in the retrieved context is left out: trained on, it would teach the
    model to state facts the context does not give it, i.e. to hallucinate.
    """
    examples = []
    for record in records:
        where = f"{path}:{record.get('_line', '?')}"
        if "messages" in record and _is_tool_record(record):
            from agentcycle.finetune.dataprep.toolcalls import tool_record_to_examples

            examples.extend(tool_record_to_examples(record, where))
        elif "messages" in record:
            examples.append(_from_messages(record["messages"], where))
        elif "question" in record and "answer" in record:
            question, answer = record["question"], record["answer"]
            if not (isinstance(question, str) and isinstance(answer, str)
                    and question.strip() and answer.strip()):
                raise DataError(f"{where}: 'question' and 'answer' must be non-empty strings")
            hits = retrieve(question) if retrieve else []
            if require_support and not _supported(record.get("keywords"), hits):
                continue
            examples.append({"prompt": build_messages(question, hits),
                             "completion": [{"role": "assistant", "content": answer.strip()}]})
        else:
            raise DataError(f"{where}: expected 'messages' or 'question' and 'answer'")
    return examples


def _is_tool_record(record: dict[str, Any]) -> bool:
    messages = record["messages"]
    return "tools" in record or (isinstance(messages, list) and any(
        isinstance(m, dict) and (m.get("role") == "tool" or m.get("tool_calls"))
        for m in messages))


def _supported(keywords: Any, hits: list) -> bool:
    if not keywords or not isinstance(keywords, list):
        return True  # nothing to check against
    context = " ".join(hit.chunk.text for hit in hits).lower()
    return all(str(k).lower() in context for k in keywords)


def _from_messages(messages: Any, where: str) -> Example:
    if not isinstance(messages, list) or len(messages) < 2:
        raise DataError(f"{where}: 'messages' must be a list of at least 2 messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES \
                or not isinstance(message.get("content"), str):
            raise DataError(f"{where}: messages[{i}] needs a role ({'/'.join(sorted(_ROLES))}) "
                            "and a string content")
    if messages[-1]["role"] != "assistant":
        raise DataError(f"{where}: the last message must be the assistant's answer")
    return {"prompt": [dict(role=m["role"], content=m["content"]) for m in messages[:-1]],
            "completion": [{"role": "assistant", "content": messages[-1]["content"]}]}
