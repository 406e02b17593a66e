import json

import pytest

from agentcycle.errors import DataError
from agentcycle.finetune import read_jsonl, to_examples
from agentcycle.rag.prompt import SYSTEM_PROMPT


def write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_question_answer_pairs_get_the_agents_prompt(tmp_path):
    data = write(tmp_path / "d.jsonl", [json.dumps({"question": "Q?", "answer": "A."})])
    [example] = to_examples(read_jsonl(data), data, retrieve=lambda q: [])
    assert example["prompt"][0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert example["prompt"][1]["content"].endswith("Question: Q?")
    assert example["completion"] == [{"role": "assistant", "content": "A."}]


def test_chat_messages(tmp_path):
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    data = write(tmp_path / "d.jsonl", [json.dumps({"messages": messages})])
    [example] = to_examples(read_jsonl(data), data)
    assert example["completion"][0]["content"] == "hello"


@pytest.mark.parametrize("lines, message", [
    ([], "empty"),
    (['{"question": "q", "answer": "a"}', "{not json"], r"d.jsonl:2: malformed JSON"),
    (['["a list"]'], r"d.jsonl:1: each line must be a JSON object"),
    (['{"prompt": "x"}'], r"d.jsonl:1: expected 'messages' or 'question' and 'answer'"),
    (['{"question": "", "answer": "a"}'], "non-empty strings"),
    (['{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}'],
     "last message must be the assistant"),
    (['{"messages": [{"role": "robot", "content": "a"}, {"role": "assistant", "content": "b"}]}'],
     r"messages\[0\] needs a role"),
])
def test_bad_data_names_file_and_line(tmp_path, lines, message):
    data = write(tmp_path / "d.jsonl", lines)
    with pytest.raises(DataError, match=message):
        to_examples(read_jsonl(data), data)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_jsonl(tmp_path / "nope.jsonl")


def test_unsupported_pairs_can_be_left_out(tmp_path):
    from agentcycle.rag.documents import Chunk
    from agentcycle.rag.store import Hit

    data = write(tmp_path / "d.jsonl", [
        json.dumps({"question": "When?", "answer": "Within 21 days.", "keywords": ["21 days"]}),
        json.dumps({"question": "How much?", "answer": "60 crowns.", "keywords": ["60 crowns"]}),
        json.dumps({"question": "Who?", "answer": "The Tribunal."}),
    ])
    context = [Hit(Chunk("## § 1\nReturn it within 21 days.", "a.md", 0, "§ 1"), 0.9)]
    records = read_jsonl(data)
    assert len(to_examples(records, data, retrieve=lambda q: context)) == 3
    kept = to_examples(records, data, retrieve=lambda q: context, require_support=True)
    assert [e["completion"][0]["content"] for e in kept] == ["Within 21 days.", "The Tribunal."]
