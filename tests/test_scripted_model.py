"""agentcycle.testing.ScriptedModel: a real OpenAI-compatible server answering from a
script, driven through the OpenAI SDK, the router and the tool agent."""

from __future__ import annotations

import httpx
import pytest

from agentcycle.testing import Reply, ScriptedModel, ToolCall, last_user_text


def test_replies_in_order_then_exhausted_is_a_clear_500():
    with ScriptedModel(["first", "second"]) as model:
        url = model.base_url
        assert httpx.get(url + "/models").json()["data"][0]["id"] == "scripted"
        answers = [httpx.post(url + "/chat/completions", json={
            "model": "scripted", "messages": [{"role": "user", "content": f"q{i}"}]})
            for i in range(3)]
    assert [a.json()["choices"][0]["message"]["content"] for a in answers[:2]] == \
        ["first", "second"]
    assert answers[0].json()["usage"]["completion_tokens"] == 1
    assert answers[2].status_code == 500
    assert "script is exhausted" in answers[2].json()["error"]["message"]
    assert [last_user_text(r) for r in model.requests] == ["q0", "q1", "q2"]


def test_tool_calls_rules_errors_and_streaming_through_the_openai_sdk():
    from openai import APIStatusError, OpenAI

    def rule(request: dict) -> str:
        return last_user_text(request).upper()

    with ScriptedModel([ToolCall("add", {"a": 1, "b": 2}), Reply(status=429, content="slow")],
                       rule=rule) as model:
        client = OpenAI(base_url=model.base_url, api_key="none")
        first = client.chat.completions.create(
            model="scripted", messages=[{"role": "user", "content": "add"}],
            tools=[{"type": "function", "function": {"name": "add", "parameters": {}}}])
        call = first.choices[0].message.tool_calls[0]
        assert (call.function.name, call.function.arguments) == ("add", '{"a": 1, "b": 2}')
        assert first.choices[0].finish_reason == "tool_calls"
        with pytest.raises(APIStatusError) as refused:
            client.with_options(max_retries=0).chat.completions.create(
                model="scripted", messages=[{"role": "user", "content": "x"}])
        assert refused.value.status_code == 429
        stream = client.chat.completions.create(
            model="scripted", messages=[{"role": "user", "content": "hello there"}],
            stream=True, stream_options={"include_usage": True})
        chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "HELLO THERE"
    assert chunks[-1].usage.total_tokens > 0


def test_the_tool_agent_runs_a_scripted_tool_call(tmp_path):
    from agentcycle.agents import ToolAgent
    from agentcycle.rag.session import router_session
    from agentcycle.settings import Settings

    def add(a: int, b: int) -> int:
        """Add two whole numbers."""
        return a + b

    with ScriptedModel([ToolCall("add", {"a": 2, "b": 3}), "It is 5."]) as model:
        settings = Settings(server_url=model.base_url, home=tmp_path)
        with router_session(settings) as router:
            result = ToolAgent(router, [add], settings=settings).run("2 + 3?")
    assert result.answer == "It is 5."
    assert [(c.name, c.result) for c in result.tool_calls] == [("add", 5)]
    assert model.requests[0]["tools"][0]["function"]["name"] == "add"
    assert model.requests[1]["messages"][-1]["role"] == "tool"
    assert result.prompt_tokens > 0
