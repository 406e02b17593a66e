"""OpenAI tool calls through the gate, for a model that writes Hermes ``<tool_call>`` text.

A scripted engine speaking the OpenAI chat-completions protocol (JSON and SSE, shaped
like ``transformers serve``'s) stands behind the real gate; the real openai SDK and
LangChain's ChatOpenAI drive it. One slow test runs the real bundled model."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from agentcycle.serving.gate import build_gate
from agentcycle.serving.toolcalls import (
    StreamRewriter,
    ToolCallParser,
    prepare_request,
    rewrite_completion,
    split_tool_calls,
)
from helpers import BackgroundServer

ENGINE = "/models/SmolLM2-135M-Instruct"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "Current time", "parameters": {"type": "object"}}}
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def engine_app() -> FastAPI:
    """The engine's side of the protocol: answers ``app.state.reply`` (split into
    ``app.state.pieces`` when streaming), records what it was sent."""
    app = FastAPI()
    app.state.requests, app.state.reply, app.state.pieces = [], "", None
    app.state.release = None  # a threading.Event the stream waits on after its 1st piece

    def envelope(body: dict, **fields) -> dict:
        return {"id": "req-1", "object": "chat.completion.chunk", "created": 1,
                "model": body["model"], **fields}

    async def sse(body: dict):
        yield f"data: {json.dumps(envelope(body, choices=[{'index': 0, 'delta': {'role': 'assistant'}}]))}\n\n"  # noqa: E501
        for i, piece in enumerate(app.state.pieces or [app.state.reply]):
            choice = {"index": 0, "delta": {"content": piece}}
            yield f"data: {json.dumps(envelope(body, choices=[choice]))}\n\n"
            if i == 0 and app.state.release is not None:
                await asyncio.to_thread(app.state.release.wait, 10)
        last = envelope(body, choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}],
                        usage={"prompt_tokens": 50, "completion_tokens": 9,
                               "total_tokens": 59})
        yield f"data: {json.dumps(last)}\n\n"  # transformers serve sends no [DONE]

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        app.state.requests.append(body)
        if body.get("stream"):
            return StreamingResponse(sse(body), media_type="text/event-stream")
        return {"id": "req-1", "object": "chat.completion", "created": 1, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop", "message": {
                    "role": "assistant", "content": app.state.reply}}],
                "usage": {"prompt_tokens": 50, "completion_tokens": 9, "total_tokens": 59}}

    return app


@pytest.fixture(scope="module")
def engine():
    app = engine_app()
    with BackgroundServer(app) as server:
        server.app = app
        yield server


@pytest.fixture(scope="module")
def gate(engine):
    with BackgroundServer(build_gate(engine.url, ENGINE, "base", "k")) as server:
        yield server


@pytest.fixture
def scripted(engine):
    """Sets the engine's reply for one test."""
    def script(reply: str, pieces: list[str] | None = None):
        engine.app.state.requests.clear()
        engine.app.state.reply, engine.app.state.pieces = reply, pieces
        engine.app.state.release = None
        return engine.app.state
    return script


@pytest.fixture
def client(gate):
    from openai import OpenAI

    return OpenAI(base_url=f"{gate.url}/v1", api_key="k")


def streamed(items: list) -> tuple[str, list[tuple[str, dict]]]:
    text = "".join(i for i in items if isinstance(i, str))
    calls = [(c["function"]["name"], json.loads(c["function"]["arguments"]))
             for c in items if isinstance(c, dict)]
    return text, calls


# --- the parser ------------------------------------------------------------------------

@pytest.mark.parametrize("text, content, calls", [
    (CALL, None, [("get_weather", {"city": "Paris"})]),
    ("Let me check.\n" + CALL, "Let me check.", [("get_weather", {"city": "Paris"})]),
    (CALL + "\n" + CALL.replace("get_weather", "get_time"), None,
     [("get_weather", {"city": "Paris"}), ("get_time", {"city": "Paris"})]),
    ('<tool_call>{"name": "get_weather", "arguments": {"city": "Rome"}}', None,  # unclosed
     [("get_weather", {"city": "Rome"})]),
    ('<tool_call>{"name": "get_weather", "parameters": {"city": "Oslo"}}</tool_call>', None,
     [("get_weather", {"city": "Oslo"})]),
    ('<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": \\"Bonn\\"}"}</tool_call>',
     None, [("get_weather", {"city": "Bonn"})]),
    ('<tool_call>{"name": "get_time"}</tool_call>', None, [("get_time", {})]),
    # a tool that was not offered stays a call: the agent loop tells the model
    ('<tool_call>{"name": "launch_rockets", "arguments": {}}</tool_call>', None,
     [("launch_rockets", {})]),
])
def test_tool_calls_are_split_from_text(text, content, calls):
    got_content, got_calls = split_tool_calls(text)
    assert got_content == content
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"]))
            for c in got_calls] == calls
    assert all(c["id"].startswith("call_") and c["type"] == "function" for c in got_calls)
    assert len({c["id"] for c in got_calls}) == len(got_calls)


@pytest.mark.parametrize("text", [
    "<tool_call>{get_weather: Paris}</tool_call>",  # not JSON
    '<tool_call>{"arguments": {"city": "Paris"}}</tool_call>',  # no name
    '<tool_call>{"name": "get_weather", "arguments": [1, 2]}</tool_call>',
    "<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": ",  # cut off
    "Use < and > for comparisons, or <tool_ for short.",
    "plain text, no calls ",
])
def test_malformed_calls_stay_plain_content(text):
    assert split_tool_calls(text) == (text, [])


TEXTS = [
    "Sure, checking.\n" + CALL + "\nDone.",
    CALL + CALL,
    "a <tool_ca b <tool_call>{oops}</tool_call> c <",
    "Hello world, no calls at all.  ",
    '<tool_call>{"name": "get_time", "arguments": {}}',
]


@pytest.mark.parametrize("text", TEXTS)
def test_stream_parser_gives_the_same_result_at_every_chunk_boundary(text):
    whole = split_tool_calls(text)
    expected = (whole[0] or "", [(c["function"]["name"], json.loads(c["function"]["arguments"]))
                                 for c in whole[1]])
    for cut in range(len(text) + 1):
        parser = ToolCallParser()
        items = parser.feed(text[:cut]) + parser.feed(text[cut:]) + parser.finish()
        assert streamed(items) == expected, cut
    parser = ToolCallParser()  # one character at a time
    items = [i for ch in text for i in parser.feed(ch)] + parser.finish()
    assert streamed(items) == expected
    if not whole[1]:  # without calls the text streams back exactly
        assert streamed(items)[0] == text


def test_text_that_cannot_start_a_tag_is_not_held_back():
    parser = ToolCallParser()
    assert parser.feed("Hello") == ["Hello"]
    assert parser.feed(" world <tool") == [" world"]
    assert parser.feed("s are fun") == [" <tools are fun"]


def test_stream_rewriter_emits_openai_tool_call_deltas():
    rewriter = StreamRewriter()
    base = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    out = []
    for piece in ["Ok. <tool", "_call>", CALL[len("<tool_call>"):], ""]:
        out += rewriter.chunk({**base, "choices": [{"index": 0, "delta": {"content": piece}}]})
    out += rewriter.chunk({**base, "usage": {"total_tokens": 3}, "choices": [
        {"index": 0, "delta": {}, "finish_reason": "stop"}]})
    deltas = [c["choices"][0]["delta"] for c in out]
    assert deltas[0] == {"content": "Ok."}
    (call,) = deltas[1]["tool_calls"]
    assert call["index"] == 0 and call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert out[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert out[-1]["usage"] == {"total_tokens": 3} and out[-1]["model"] == "m"


CUT = CALL + '\n<tool_call>\n{"name": "get_ti'  # a second call cut at max_tokens


def test_a_turn_cut_at_max_tokens_keeps_its_whole_calls_and_says_length():
    body = {"choices": [{"index": 0, "finish_reason": "length",
                         "message": {"role": "assistant", "content": CUT}}]}
    (choice,) = rewrite_completion(body)["choices"]
    (whole,) = choice["message"]["tool_calls"]
    assert whole["function"]["name"] == "get_weather"
    assert choice["finish_reason"] == "length"  # not "tool_calls": a call may be lost
    assert choice["message"]["content"].startswith("<tool_call>")  # the cut one, as text


def test_a_streamed_turn_cut_at_max_tokens_ends_with_length():
    rewriter = StreamRewriter()
    base = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    out = rewriter.chunk({**base, "choices": [{"index": 0, "delta": {"content": CUT}}]})
    out += rewriter.chunk({**base, "choices": [
        {"index": 0, "delta": {}, "finish_reason": "length"}]})
    calls = [c for o in out for c in o["choices"][0]["delta"].get("tool_calls", [])]
    assert [c["function"]["name"] for c in calls] == ["get_weather"]
    assert out[-1]["choices"][0]["finish_reason"] == "length"


# --- the prompt ------------------------------------------------------------------------

def test_tools_and_history_render_into_the_prompt():
    body = prepare_request({"model": "m", "tools": [WEATHER, TIME], "tool_choice": "auto",
                            "parallel_tool_calls": False, "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris and the time?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "call_2", "type": "function",
             "function": {"name": "get_time", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "9:00"}]},
    ]})
    assert set(body) == {"model", "messages"}
    system, user, assistant, results = body["messages"]
    assert system["content"].startswith("Be brief.\n\n# Tools")
    assert json.dumps(WEATHER) in system["content"] and json.dumps(TIME) in system["content"]
    assert "<tool_call></tool_call> XML tags" in system["content"]
    assert assistant == {"role": "assistant", "content": (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>')}
    assert results == {"role": "user", "content": "<tool_response>\n18 C, sunny\n"
                       "</tool_response>\n<tool_response>\n9:00\n</tool_response>"}


def test_tool_choice_none_presents_no_tools_and_a_named_one_only_that_one():
    messages = [{"role": "user", "content": "hi"}]
    none = prepare_request({"tools": [WEATHER], "tool_choice": "none", "messages": messages})
    assert none["messages"] == messages
    named = prepare_request({"tools": [WEATHER, TIME], "messages": messages, "tool_choice": {
        "type": "function", "function": {"name": "get_time"}}})
    system = named["messages"][0]
    assert system["role"] == "system" and "get_time" in system["content"]
    assert "get_weather" not in system["content"]
    assert system["content"].endswith("You must call the function get_time.")


def test_a_response_with_calls_already_parsed_is_left_alone():
    body = {"choices": [{"finish_reason": "tool_calls", "message": {
        "content": CALL, "tool_calls": [{"id": "call_x"}]}}]}
    assert rewrite_completion(json.loads(json.dumps(body))) == body


# --- through the gate, with the real clients -------------------------------------------

def test_openai_sdk_gets_structured_tool_calls(client, scripted):
    state = scripted("I will look it up.\n" + CALL)
    response = client.chat.completions.create(
        model="base", tools=[WEATHER], messages=[{"role": "user", "content": "Paris weather?"}])
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls" and response.model == "base"
    assert choice.message.content == "I will look it up."
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    sent = state.requests[-1]
    assert "tools" not in sent and sent["model"] == ENGINE
    assert json.dumps(WEATHER) in sent["messages"][0]["content"]


def test_openai_sdk_streams_tool_calls(client, scripted):
    pieces = ["Checking", " now.\n<", "tool_", "call>\n{\"name\": \"get_", 'weather", "argu',
              'ments": {"city": "Paris"}}\n</tool', "_call>"]
    scripted("".join(pieces), pieces)
    stream = client.chat.completions.create(
        model="base", tools=[WEATHER], stream=True,
        messages=[{"role": "user", "content": "Paris weather?"}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert text == "Checking now."
    assert [(c.index, c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        (0, "get_weather", {"city": "Paris"})]
    assert calls[0].id.startswith("call_") and calls[0].type == "function"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert chunks[-1].usage.total_tokens == 59 and {c.model for c in chunks} == {"base"}


def test_plain_text_with_tools_streams_promptly(client, scripted):
    state = scripted("", ["Hello there", ", no tools needed."])
    state.release = threading.Event()
    try:
        stream = client.chat.completions.create(
            model="base", tools=[WEATHER], stream=True, timeout=20,
            messages=[{"role": "user", "content": "hi"}])
        started = time.monotonic()
        first = next(c for c in stream if c.choices and c.choices[0].delta.content)
        # the engine is still waiting: the gate did not hold the text back
        assert first.choices[0].delta.content == "Hello there"
        assert time.monotonic() - started < 5 and not state.release.is_set()
    finally:
        state.release.set()
    rest = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in rest if c.choices) == (
        ", no tools needed.")
    assert rest[-1].choices[0].finish_reason == "stop"


def test_requests_without_tools_pass_through_byte_for_byte(gate, engine, scripted):
    scripted("Plain " + CALL)  # tags stay text when no tools were offered
    body = {"model": "base", "messages": [{"role": "user", "content": "hi"}]}
    direct = httpx.post(f"{engine.url}/v1/chat/completions", json={**body, "model": ENGINE})
    via = httpx.post(f"{gate.url}/v1/chat/completions", json=body,
                     headers={"Authorization": "Bearer k"})
    assert via.content == direct.content.replace(json.dumps(ENGINE).encode(), b'"base"')
    stream = {**body, "stream": True}
    direct = httpx.post(f"{engine.url}/v1/chat/completions", json={**stream, "model": ENGINE})
    via = httpx.post(f"{gate.url}/v1/chat/completions", json=stream,
                     headers={"Authorization": "Bearer k"})
    assert via.content == direct.content.replace(json.dumps(ENGINE).encode(), b'"base"')


def test_history_round_trip_reaches_the_engine_as_text(client, scripted):
    state = scripted("It is 18 C and sunny in Paris.")
    response = client.chat.completions.create(model="base", tools=[WEATHER], messages=[
        {"role": "user", "content": "Paris weather?"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"}])
    assert response.choices[0].message.content == "It is 18 C and sunny in Paris."
    choice = response.choices[0]
    assert choice.finish_reason == "stop" and not choice.message.tool_calls
    roles = [(m["role"], m["content"]) for m in state.requests[-1]["messages"]]
    assert roles[1:] == [("user", "Paris weather?"), ("assistant", CALL),
                         ("user", "<tool_response>\n18 C, sunny\n</tool_response>")]


def test_bad_tool_choice_is_a_clear_400(gate, scripted):
    state = scripted("unused")
    response = httpx.post(f"{gate.url}/v1/chat/completions", headers={"Authorization": "Bearer k"},
                          json={"model": "base", "tools": [WEATHER], "messages": [],
                                "tool_choice": {"type": "function", "function": {"name": "x"}}})
    assert response.status_code == 400
    assert "'x'" in response.json()["error"]["message"] and not state.requests


@pytest.mark.parametrize("body, message", [
    ([1], "must be a JSON object"),
    ({"model": "base"}, "'messages' must be a list"),
    ({"model": "base", "messages": "hi"}, "'messages' must be a list"),
    ({"model": "base", "messages": ["hi"], "tool_choice": "auto"}, "'messages' must be a list"),
    ({"model": "base", "messages": [{"role": "assistant", "tool_calls": "x"}]}, "'tool_calls'"),
    ({"model": "base", "messages": [{"role": "assistant", "tool_calls": ["x"]}]}, "'tool_calls'"),
])
def test_malformed_bodies_are_a_clear_400_not_a_500(gate, scripted, body, message):
    state = scripted("unused")
    response = httpx.post(f"{gate.url}/v1/chat/completions", json=body,
                          headers={"Authorization": "Bearer k"})
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]["message"] and not state.requests


def test_models_and_health_say_503_when_the_engine_is_gone():
    """/ready probes /v1/models: it said "ok" (and /health was a 500) with the engine dead."""
    from agentcycle.serving.server import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    with BackgroundServer(build_gate(dead, ENGINE, "base", "k")) as alone:
        models = httpx.get(f"{alone.url}/v1/models", headers={"Authorization": "Bearer k"})
        assert models.status_code == 503 and "not answering" in models.json()["error"]["message"]
        health = httpx.get(f"{alone.url}/health")
        assert health.status_code == 503 and health.json()["status"] == "unhealthy"


def test_langchain_bind_tools_gets_tool_calls(gate, scripted):
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_weather(city: str) -> str:
        """Current weather in a city."""
        return "sunny"

    llm = ChatOpenAI(base_url=f"{gate.url}/v1", api_key="k", model="base").bind_tools(
        [get_weather])
    scripted(CALL)
    message = llm.invoke("Weather in Paris?")
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [
        ("get_weather", {"city": "Paris"})]
    assert message.tool_calls[0]["id"].startswith("call_")

    pieces = [CALL[:5], CALL[5:30], CALL[30:]]
    scripted(CALL, pieces)
    chunks = list(llm.stream("Weather in Paris?"))
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk
    assert [(c["name"], c["args"]) for c in merged.tool_calls] == [
        ("get_weather", {"city": "Paris"})]


def test_the_router_through_litellm_gets_tool_calls(gate, scripted):
    """LiteLLM's openai/ provider: the path our Router and CrewAI take to a local server."""
    from agentcycle.router import Router
    from agentcycle.router.backends import local_backend

    scripted(CALL)
    router = Router([local_backend("local", f"{gate.url}/v1", "base", "k")])
    completion = router.complete([{"role": "user", "content": "Paris weather?"}],
                                 tools=[WEATHER])
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"]))
            for c in completion.tool_calls] == [("get_weather", {"city": "Paris"})]


# --- the real model --------------------------------------------------------------------

@pytest.mark.slow
def test_real_model_sees_the_tools_and_answers_in_openai_shape(base_server):
    from openai import OpenAI

    client = OpenAI(base_url=base_server.base_url, api_key="test-key")
    messages = [{"role": "user", "content": "What is the weather in Paris? Use the tool."}]
    plain = client.chat.completions.create(model="base", max_tokens=1, messages=messages)
    with_tools = client.chat.completions.create(
        model="base", max_tokens=40, temperature=0, messages=messages, tools=[WEATHER])
    grown = with_tools.usage.prompt_tokens - plain.usage.prompt_tokens
    assert grown > len(json.dumps(WEATHER)) // 6, grown  # the schema reached the model
    choice = with_tools.choices[0]
    assert choice.finish_reason in ("tool_calls", "stop", "length")
    assert (choice.finish_reason == "tool_calls") == bool(choice.message.tool_calls)
    for call in choice.message.tool_calls or []:
        assert call.id.startswith("call_") and isinstance(
            json.loads(call.function.arguments), dict)
    if not choice.message.tool_calls:
        assert isinstance(choice.message.content, str)
