import json
import subprocess
import sys
import textwrap

from fastapi import FastAPI, Request
from typer.testing import CliRunner

from agentcycle.cli.main import app
from agentcycle.observe import list_traces
from helpers import BackgroundServer


def _flush():
    import mlflow

    mlflow.flush_trace_async_logging()


def test_an_agent_run_is_one_trace_with_retrieval_and_llm_spans(legal_agent, settings):
    answer = legal_agent.ask("How many days does a landlord have to return a deposit?")
    _flush()
    [row] = list_traces(settings, last=1)
    assert row.name == "rag agent" and row.status == "OK"
    assert row.model == "base"
    assert (row.prompt_tokens, row.completion_tokens) == (answer.prompt_tokens,
                                                          answer.completion_tokens)
    assert row.question.startswith("How many days")

    import mlflow

    trace = mlflow.get_trace(row.trace_id)
    spans = {s.name: s for s in trace.data.spans}
    assert {"rag agent", "retrieve", "llm base"} <= set(spans)
    llm = spans["llm base"].attributes
    assert llm["gen_ai.usage.input_tokens"] == answer.prompt_tokens
    assert llm["agentcycle.cost_usd"] == 0.0 and llm["agentcycle.latency_ms"] > 0
    assert len(spans["retrieve"].outputs) == 3


def test_traces_cli_prints_a_table_and_json(legal_agent, settings):
    legal_agent.ask("Who decides disputes between landlords and tenants?")
    _flush()
    runner = CliRunner()
    table = runner.invoke(app, ["traces", "--last", "5"], env={"COLUMNS": "80"})
    assert table.exit_code == 0 and "rag agent" in table.output
    # Readable at 80 columns: one line per run, the question cut, not the names.
    assert "Who decides" in table.output and max(map(len, table.output.splitlines())) <= 80
    data = json.loads(runner.invoke(app, ["traces", "--json"]).output)
    assert data[0]["name"] == "rag agent" and data[0]["completion_tokens"] > 0


def test_langfuse_receives_the_same_spans_over_otlp(tmp_path):
    """Langfuse's server needs Docker; its OTLP endpoint is stood in for by a recorder
    that checks the path and the Basic auth the Langfuse docs prescribe."""
    received = []
    recorder = FastAPI()

    @recorder.post("/api/public/otel/v1/traces")
    async def otlp(request: Request):
        received.append((request.headers.get("authorization"), await request.body()))
        return {}

    script = textwrap.dedent("""
        from agentcycle.settings import Settings
        from agentcycle.observe.tracing import setup_tracking, span
        setup_tracking(Settings())
        with span("rag agent", "AGENT", inputs={"question": "q"}):
            with span("llm local", "LLM", attributes={"gen_ai.usage.input_tokens": 7}):
                pass
    """)
    with BackgroundServer(recorder) as langfuse:
        env = {**__import__("os").environ, "LANGFUSE_HOST": langfuse.url,
               "LANGFUSE_PUBLIC_KEY": "pk-lf-1", "LANGFUSE_SECRET_KEY": "sk-lf-1"}
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert received, "no spans reached the Langfuse OTLP endpoint"
    import base64

    assert received[0][0] == "Basic " + base64.b64encode(b"pk-lf-1:sk-lf-1").decode()
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    names = set()
    for _, body in received:
        request = ExportTraceServiceRequest.FromString(body)
        names |= {s.name for rs in request.resource_spans
                  for ss in rs.scope_spans for s in ss.spans}
    assert {"rag agent", "llm local"} <= names
    # ...and the embedded store still has the trace (dual export).
    check = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        from agentcycle.settings import Settings
        from agentcycle.observe import list_traces
        print(len(list_traces(Settings())))
    """)], capture_output=True, timeout=120, text=True)
    assert check.stdout.strip() == "1"


def test_spans_follow_the_current_settings_store(tmp_path, monkeypatch):
    """span() kept writing to the first store set up in the process, even after
    AGENTCYCLE_HOME pointed elsewhere."""
    from agentcycle.observe.tracing import setup_tracking, span
    from agentcycle.settings import Settings

    def at(home):  # (`home=` is ignored: the field reads its env-variable alias)
        return Settings(AGENTCYCLE_HOME=str(home))

    def names(home):
        return [row.name for row in list_traces(at(home), last=10)]

    first, second, third = tmp_path / "one", tmp_path / "two", tmp_path / "three"
    monkeypatch.setenv("AGENTCYCLE_HOME", str(first))
    with span("in one", "AGENT"):
        pass
    monkeypatch.setenv("AGENTCYCLE_HOME", str(second))  # a later Settings: a new store
    with span("in two", "AGENT"):
        with span("still two", "LLM", settings=at(third)):  # joins its trace
            pass
    with span("in three", "AGENT", settings=at(third)):  # an explicit store
        pass
    setup_tracking(at(first))  # chosen explicitly: kept while the env stays
    with span("one again", "AGENT"):
        pass
    _flush()
    assert names(first) == ["one again", "in one"]
    assert names(second) == ["in two"]
    assert names(third) == ["in three"]
