"""Each target kind against real servers: the bundled model behind our gate, the Router,
an agent app over HTTP, Python functions, and the --target string syntax."""

import pytest

from agentcycle.agents import BaseAgent
from agentcycle.errors import ConfigError
from agentcycle.evals import (
    CallableTarget,
    Case,
    HttpAppTarget,
    OpenAITarget,
    Output,
    Suite,
    open_target,
)
from agentcycle.evals.runner import run_suite_sync
from agentcycle.rag import Answer, Source
from helpers import BackgroundServer, fake_cloud_app

QUESTION = Case(id="q", input="What is the capital of France? Answer in one word.",
                keywords=["Paris"], reference_sources=["§ 7"])


def run(target, case=QUESTION):
    import asyncio

    return asyncio.run(target.run(case))


def test_openai_target_on_the_real_model_server(base_server):
    with open_target(f"openai:{base_server.base_url}#base?key=test-key&max_tokens=8") as target:
        output = run(target)
        assert output.text and output.model and output.error is None
        assert output.prompt_tokens > 0 and 0 < output.completion_tokens <= 8
        assert output.latency_ms > 0 and output.cost_usd == 0.0  # a local model is free
        wrong_key = OpenAITarget(base_server.base_url, "base", "wrong", max_tokens=4)
        # Refused by the key gate: every case would be, so the run stops with that error.
        with pytest.raises(ConfigError, match="HTTP 401"):
            run_suite_sync(Suite(name="s", cases=[QUESTION], scorers=["keywords"]),
                           wrong_key, retries=0)
    # One token cannot hold an answer and its end marker: the engine stops at max_tokens
    # (finish reason "length"), and the output says it was cut.
    with open_target(f"openai:{base_server.base_url}#base?key=test-key&max_tokens=1") as target:
        cut = run(target)
        assert cut.completion_tokens == 1 and cut.truncated


def test_openai_target_prices_cloud_models_and_reads_tool_calls():
    app = fake_cloud_app(answer="")
    with BackgroundServer(app) as server:
        output = run(OpenAITarget(server.url + "/v1", "gpt-4o-mini", "sk-test",
                                  system_prompt="Be brief."))
    body = app.state.requests[0]["body"]
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert output.cost_usd == pytest.approx(100 * 0.15e-6 + 20 * 0.6e-6)  # LiteLLM's map
    from agentcycle.evals.targets import _tool_call

    call = _tool_call({"function": {"name": "lookup", "arguments": '{"section": 8}'}})
    assert call.name == "lookup" and call.arguments == {"section": 8}


def test_router_target_from_a_router_config(base_server, tmp_path, monkeypatch):
    monkeypatch.setenv("BASE_KEY", "test-key")
    (tmp_path / "router.yaml").write_text(
        f"backends:\n  base: {{model: openai/base, api_base: '{base_server.base_url}', "
        "api_key_env: BASE_KEY, local: true}\nroutes:\n  main: {backends: [base]}\n")
    with open_target("router:router.yaml#main?max_tokens=4", base_dir=tmp_path) as target:
        output = run(target)
    assert output.text and output.model == "base" and 0 < output.completion_tokens <= 4
    assert target.key.startswith("router:router.yaml:") and target.route == "main"


def answer(text="Within 21 days (§ 11)."):
    return Answer(answer=text, model="base", backend="local", latency_ms=12.0,
                  prompt_tokens=30, completion_tokens=7, cost_usd=0.0,
                  sources=[Source(source="part2_deposits.md", heading="§ 11. Return of the "
                                  "deposit", score=0.8, text="The deposit must be returned")])


class StubAgent(BaseAgent):
    kind = "rag"

    def run(self, task, **options):
        return answer()


def test_http_app_target_against_the_agent_app():
    from agentcycle.app import create_app

    with BackgroundServer(create_app(StubAgent(), ui=False)) as server, \
            open_target(f"app:{server.url}") as target:
        output = run(target)
    assert output.text == "Within 21 days (§ 11)."
    assert [c.source for c in output.contexts] == ["§ 11"]
    assert output.prompt_tokens == 30 and output.model == "local"
    with BackgroundServer(create_app(StubAgent(), ui=False)) as server:
        pass  # stopped: the target must fail, not hang
    with pytest.raises(Exception, match="ConnectError"):
        run(HttpAppTarget(server.url, timeout_s=2))


async def async_agent(question):
    return {"text": f"async {question}", "model": "m"}


def test_callable_targets_accept_text_dicts_outputs_and_answers(tmp_path):
    assert run(CallableTarget(lambda q: "Paris")).text == "Paris"
    assert run(CallableTarget(async_agent)).text.startswith("async What")
    assert run(CallableTarget(lambda q: Output(text="x", steps=3))).steps == 3
    rag = run(CallableTarget(lambda q: answer()))
    assert rag.contexts[0].source == "§ 11" and rag.latency_ms == 12.0
    assert run(CallableTarget(lambda case: case.id, takes_case=True)).text == "q"
    with pytest.raises(Exception, match="returned int"):
        run(CallableTarget(lambda q: 42))

    agent_file = tmp_path / "my_agent.py"
    agent_file.write_text("def ask(question):\n    return 'from a file'\n")
    with open_target("python:my_agent.py:ask", base_dir=tmp_path) as target:
        assert run(target).text == "from a file" and target.key.startswith("python:my_agent.ask")
    with open_target("python:agentcycle.evals.targets:section_id") as target:
        assert callable(target.fn)


@pytest.mark.parametrize("spec, message", [
    ("gpt-4o-mini", "start it with one of"),
    ("openai:http://127.0.0.1:1/v1", "write openai:URL#MODEL"),
    ("python:nope_module:fn", "cannot import 'nope_module'"),
    ("python:agentcycle.evals.targets:nope", "has no function 'nope'"),
    ("rag:x?top_k=many", "whole number"),
    ("agent:rag?keep_sentences=0", "'keep_sentences' must be at least 1"),
])
def test_bad_target_strings_say_how_to_write_them(spec, message):
    with pytest.raises(ConfigError, match=message), open_target(spec):
        pass


HOSTILE = {  # what a broken or hostile server may answer, and the one line it becomes
    "html": ("<html>502 Bad Gateway</html>", "the response is not JSON: '<html>502"),
    "list": ("[1, 2]", "the response is a JSON list, not an object"),
    "no-choices": ('{"choices": []}', "not an OpenAI chat completion (choices: List should"),
    "choices-str": ('{"choices": "x"}', "not an OpenAI chat completion (choices: "),
    "content-int": ('{"choices": [{"message": {"content": 5}}]}',
                    "(choices.0.message.content: Value error, should be a string, a list"),
    "trickle": ("", "no complete response in 2 s"),  # a byte every 0.2 s, for ever
    "tool-calls-str": ('{"choices": [{"message": {"tool_calls": "x"}}]}',
                       "(choices.0.message.tool_calls: Input should be a valid list)"),
    "truncated": ('{"choices": [{"mess', "the response is not JSON"),
    "huge": ('{"choices": [{"message": {"content": "' + "x" * 3_000_000 + '"}}]}',
             "the response is larger than 2 MiB; not read further"),
}


def test_a_hostile_server_gives_each_case_one_readable_error():
    """Whatever comes back, the case's error is one line of ours (no Python exception
    text), and a 3 MB body is neither read whole nor stored."""
    import asyncio

    from fastapi import FastAPI, Request
    from fastapi.responses import Response, StreamingResponse

    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def answer(request: Request):
        model = (await request.json())["model"]
        if model == "trickle":
            async def drip():
                while True:
                    yield b" "
                    await asyncio.sleep(0.2)

            return StreamingResponse(drip(), media_type="application/json")
        if model == "lenient":  # odd bookkeeping, an answer in parts: the answer counts
            return {"choices": [{"message": {"content": [
                {"type": "text", "text": "Paris"}, {"type": "text", "text": "."}]},
                "finish_reason": 1}], "usage": {"prompt_tokens": "lots",
                                                 "completion_tokens": -3}, "model": 123}
        return Response(HOSTILE[model][0], media_type="application/json")

    apps = {"answer-int": ('{"answer": 5}', "not an AgentResult (answer: Input should"),
            "text-list": ('{"text": []}', "not an Output (text: Input should")}

    @app.post("/{kind}/v1/ask")
    async def ask(kind: str):
        return Response(apps[kind][0], media_type="application/json")

    suite = Suite(name="hostile", cases=[QUESTION], scorers=["keywords"])
    with BackgroundServer(app) as server:
        lenient = run(OpenAITarget(server.url + "/v1", "lenient"))
        assert (lenient.text, lenient.error, lenient.model) == ("Paris.", None, "lenient")
        assert lenient.prompt_tokens == lenient.completion_tokens == 0
        targets = [(OpenAITarget(server.url + "/v1", model, timeout_s=2), expected)
                   for model, (_, expected) in HOSTILE.items()]
        targets += [(HttpAppTarget(f"{server.url}/{kind}"), expected)
                    for kind, (_, expected) in apps.items()]
        for target, expected in targets:
            [case] = run_suite_sync(suite, target, retries=0).results
            assert expected in case.error and "\n" not in case.error, case.error
            assert len(case.error) <= 300 and case.output.text == ""
            assert "Traceback" not in case.error and "Error:" not in case.error
