"""The tool-calling agent's loop against a scripted model that speaks the OpenAI
protocol (tool calls in, tool messages back), and its tools' schemas and validation."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from fastapi import FastAPI

from agentcycle.agents import AgentResult, Tool, ToolAgent, tool
from agentcycle.evals.targets import to_output
from agentcycle.router import Router
from agentcycle.router.backends import local_backend
from helpers import BackgroundServer, chat_app, dead_url


def get_section(number: str) -> dict:
    """Fetch one section of the Act by its number.

    Args:
        number: The section number, e.g. "8".
    """
    if number != "8":
        raise ValueError(f"no section {number}")
    return {"section": "§ 8", "heading": "§ 8. Deposit cap", "text": "Two months' rent."}


def slow_tool(seconds: float) -> str:
    """Sleep, then answer.

    Args:
        seconds: How long to sleep.
    """
    time.sleep(seconds)
    return "done"


def call(name: str, arguments, call_id: str = "call_1") -> dict:
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"role": "assistant", "content": None, "tool_calls": [
        {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}]}


def say(text: str) -> dict:
    return {"role": "assistant", "content": text}


def scripted_app(script: list[dict]) -> FastAPI:
    """Answers each request with the next scripted message; records the requests."""
    app = None

    def respond(body: dict) -> dict:
        message = script[min(len(app.state.requests), len(script)) - 1]
        return {k: v for k, v in message.items() if k != "role"}

    app = chat_app(respond, usage=(50, 10))
    return app


@pytest.fixture
def scripted():
    servers = []

    def start(script: list[dict], tools=None, **options) -> tuple[ToolAgent, FastAPI]:
        app = scripted_app(script)
        server = BackgroundServer(app).__enter__()
        servers.append(server)
        router = Router([local_backend("scripted", server.url + "/v1", "m")], log_path=None,
                        tracing=False)
        return ToolAgent(router, tools or [get_section, slow_tool], **options), app

    yield start
    for server in servers:
        server.__exit__()


def test_schema_comes_from_signature_and_docstring():
    schema = Tool.from_function(get_section).openai_schema()["function"]
    assert schema["name"] == "get_section"
    assert schema["description"] == "Fetch one section of the Act by its number."
    assert schema["parameters"]["properties"]["number"] == {
        "type": "string", "description": 'The section number, e.g. "8".'}
    assert schema["parameters"]["required"] == ["number"]


def test_decorated_tool_keeps_its_options():
    @tool(timeout_s=2)
    def add(a: int, b: int = 1) -> int:
        """Add two numbers."""
        return a + b

    assert isinstance(add, Tool) and add.timeout_s == 2
    assert add.validate('{"a": 2}') == {"a": 2}
    assert add.parameters["properties"]["b"]["default"] == 1


def test_a_call_then_an_answer(scripted):
    agent, app = scripted([call("get_section", {"number": "8"}), say("Two months' rent (§ 8).")])
    result = agent.run("What is the deposit cap?")
    assert result.status == "completed" and result.answer == "Two months' rent (§ 8)."
    [record] = result.tool_calls
    assert (record.name, record.arguments, record.error) == ("get_section", {"number": "8"}, None)
    assert record.result["heading"] == "§ 8. Deposit cap"
    assert [s.kind for s in result.steps] == ["llm", "tool", "llm"]
    assert (result.prompt_tokens, result.completion_tokens) == (100, 20)
    assert result.sources[0].heading == "§ 8. Deposit cap"
    # The tools were offered; the result went back as a tool message on the same call id.
    first, second = app.state.requests
    assert [t["function"]["name"] for t in first["tools"]] == ["get_section", "slow_tool"]
    assert second["messages"][-1] == {"role": "tool", "tool_call_id": "call_1",
                                      "content": json.dumps(record.result)}
    assert second["messages"][-2]["tool_calls"][0]["function"]["name"] == "get_section"


def test_a_turn_cut_at_max_tokens_is_marked_in_its_step(scripted):
    # The engine stopped at max_tokens after one whole call: a second may be lost, and
    # the step must say so (a missing call would otherwise read as the model's choice).
    cut = {**call("get_section", {"number": "8"}), "finish_reason": "length"}
    agent, _ = scripted([cut, say("Two months' rent (§ 8).")])
    result = agent.run("Quote section 8 and tell me the deadline.")
    first, tool_step, last = result.steps
    assert first.detail["cut_at_max_tokens"] is True and first.detail["tool_calls"] == 1
    assert "cut_at_max_tokens" not in last.detail and result.status == "completed"
    assert [c.name for c in result.tool_calls] == ["get_section"]
    assert to_output(result).truncated  # and the eval's output records it
    whole = scripted([call("get_section", {"number": "8"}), say("Two months' rent.")])[0]
    assert not to_output(whole.run("Quote section 8.")).truncated


@pytest.mark.parametrize(("bad_call", "expected"), [
    (call("lookup", {"q": "x"}), "unknown tool 'lookup'; the tools are: get_section, slow_tool"),
    (call("get_section", "{number: 8"), "not valid JSON"),
    (call("get_section", {"number": 8}), "invalid arguments for get_section: number:"),
    (call("get_section", {}), "invalid arguments for get_section: number: Field required"),
    (call("get_section", {"number": "99"}), "get_section failed: ValueError: no section 99"),
])
def test_a_bad_call_is_reported_to_the_model_and_in_the_result(scripted, bad_call, expected):
    agent, app = scripted([bad_call, say("Sorry.")])
    result = agent.run("q")
    assert result.status == "completed" and result.answer == "Sorry."
    assert expected in result.tool_calls[0].error
    assert expected in json.loads(app.state.requests[1]["messages"][-1]["content"])["error"]


def test_a_tool_that_times_out_is_reported(scripted):
    slow = Tool.from_function(slow_tool, timeout_s=0.2)
    agent, _ = scripted([call("slow_tool", {"seconds": 2}), say("It timed out.")], tools=[slow])
    result = agent.run("q")
    assert result.tool_calls[0].error == "slow_tool timed out after 0.2 s"
    assert result.status == "completed"


def test_the_step_limit_ends_the_run_with_its_error(scripted):
    agent, app = scripted([call("get_section", {"number": "8"})], max_steps=3)
    result = agent.run("q")
    assert result.status == "failed"
    assert result.error == "step limit reached: 3 model calls without a final answer"
    assert len(app.state.requests) == 3 and len(result.tool_calls) == 3


def test_an_unreachable_model_is_a_failed_run_not_a_crash():
    with dead_url() as url:
        router = Router([local_backend("dead", url, "m")], log_path=None, tracing=False)
        result = ToolAgent(router, [get_section]).run("q")
    assert result.status == "failed" and "model call failed" in result.error


def test_arun_and_the_eval_converter_keep_tool_calls(scripted):
    agent, _ = scripted([call("get_section", {"number": "99"}), call("get_section",
                         {"number": "8"}, "call_2"), say("§ 8.")])
    result = asyncio.run(agent.arun("q"))
    assert isinstance(result, AgentResult) and result.kind == "tools"
    output = to_output(result)
    assert [(c.name, c.arguments) for c in output.tool_calls] == [
        ("get_section", {"number": "99"}), ("get_section", {"number": "8"})]
    assert output.tool_calls[0].error and output.tool_calls[1].result["section"] == "§ 8"
    assert output.steps == 3 and output.contexts[0].source == "§ 8"
    # The app serves the result as JSON; the converter reads it back the same way.
    assert to_output(json.loads(result.model_dump_json())) == output


def test_a_name_given_to_two_tools_is_an_error():
    from agentcycle.errors import ConfigError

    with pytest.raises(ConfigError, match="two tools are named 'get_section'"):
        ToolAgent(None, [get_section, get_section])


def test_a_failed_run_is_recorded_in_its_trace(scripted, settings):
    import mlflow

    from agentcycle.observe.tracing import setup_tracking

    agent, _ = scripted([call("get_section", {"number": "8"})], max_steps=1)
    agent.settings = settings
    setup_tracking(settings)
    result = agent.run("q")
    mlflow.flush_trace_async_logging()
    trace = mlflow.get_trace(result.trace_id)
    assert trace.info.state.value == "ERROR"
    root = next(s for s in trace.data.spans if s.name == "tool agent")
    assert root.attributes["agentcycle.error"] == result.error
    assert [s.name for s in trace.data.spans if s.span_type == "TOOL"] == ["tool get_section"]
