"""SFT and DPO data from recorded runs: real MLflow (SQLite under tmp), real eval runs."""

from __future__ import annotations

import json

from agentcycle.evals.results import CaseResult, EvalRun, runs_dir, save_run
from agentcycle.evals.types import Context, Output, Score
from agentcycle.finetune.dataprep import dpo_from_feedback, from_mlflow, mlflow_calls
from agentcycle.settings import Settings
from helpers import assert_clean_error, cli_run


def _traced_call(question: str, answer: str, feedback=None) -> str:
    import mlflow

    from agentcycle.observe.tracing import span

    with span("rag agent", "AGENT", inputs={"question": question}) as root:
        with span("llm base", "LLM", inputs={"messages": [
                {"role": "system", "content": "Answer from the context."},
                {"role": "user", "content": f"Question: {question}"}]}) as llm:
            llm.set_outputs({"text": answer})
        trace_id = root.trace_id
    if feedback is not None:
        mlflow.flush_trace_async_logging()  # the trace must be stored before its feedback
        mlflow.log_feedback(trace_id=trace_id, name="user", value=feedback)
    return trace_id


def test_sft_from_mlflow_traces_filtered_by_feedback(tmp_path):
    import mlflow

    settings = Settings()
    good = _traced_call("What is the fee?", "18 crowns (§ 9).", feedback=True)
    _traced_call("What is the cap?", "I do not know.", feedback=0.0)
    _traced_call("Unjudged?", "Maybe.")
    mlflow.flush_trace_async_logging()
    everything = from_mlflow(settings)
    assert everything.seen == 3 and len(everything.records) == 3
    kept = from_mlflow(settings, min_score=0.5)
    assert [r["trace_id"] for r in kept.records] == [good]
    assert kept.records[0]["messages"][-1] == {"role": "assistant", "content": "18 crowns (§ 9)."}
    assert kept.skipped == {"no feedback": 1, "score below 0.5": 1}

    out = tmp_path / "sft.jsonl"
    code, text = cli_run("data", "from-traces", "--out", str(out), "--min-score", "1")
    assert code == 0, text
    assert [json.loads(x)["trace_id"] for x in out.read_text().splitlines()] == [good]
    code, text = cli_run("data", "from-traces", "--out", str(out), "--min-score", "2")
    assert_clean_error(code, text, "no examples")
    assert [json.loads(x)["trace_id"] for x in out.read_text().splitlines()] == [good]


def test_dpo_from_feedback_pairs_best_and_worst_answer(tmp_path):
    import mlflow

    _traced_call("What is the fee?", "18 crowns.", feedback=1.0)
    _traced_call("What is the fee?", "100 crowns.", feedback=0.0)
    _traced_call("What is the cap?", "1.5 months.", feedback=1.0)
    mlflow.flush_trace_async_logging()
    pairs = dpo_from_feedback(mlflow_calls(Settings()))
    assert len(pairs.records) == 1
    pair = pairs.records[0]
    assert pair["chosen"][0]["content"] == "18 crowns."
    assert pair["rejected"][0]["content"] == "100 crowns."
    assert pairs.skipped == {"only one answer to its prompt": 1}


def _run() -> EvalRun:
    ctx = [Context(source="part2.md § 9", text="§ 9. The fee is 18 crowns.")]
    cases = [
        CaseResult(id="1", input="What is the fee?", reference="18 crowns (§ 9).",
                   output=Output(text="18 crowns.", contexts=ctx), passed=True,
                   scores={"kw": Score(value=1.0, passed=True)}),
        CaseResult(id="2", input="What is the cap?", reference="1.5 months' rent (§ 8).",
                   output=Output(text="2 months."), passed=False,
                   scores={"kw": Score(value=0.0, passed=False)}),
        CaseResult(id="3", input="Same?", reference="Yes.", output=Output(text="yes"),
                   passed=False, scores={"kw": Score(value=0.4, passed=False)}),
        CaseResult(id="4", input="Broken?", error="timeout"),
    ]
    return EvalRun(run_id="20260101-000000-000abc", suite="s", target="t", results=cases)


def test_from_evals_sft_and_dpo(tmp_path):
    run = _run()
    save_run(run, runs_dir(Settings()) / run.run_id)
    sft, dpo = tmp_path / "sft.jsonl", tmp_path / "dpo.jsonl"
    code, text = cli_run("data", "from-evals", run.run_id, "--out", str(sft))
    assert code == 0, text
    [record] = [json.loads(x) for x in sft.read_text().splitlines()]
    assert record["case_id"] == "1" and "18 crowns." in record["messages"][-1]["content"]
    assert "The fee is 18 crowns" in record["messages"][1]["content"]  # the context it saw
    code, text = cli_run("data", "from-evals", run.run_id, "--out", str(dpo), "--kind", "dpo")
    assert code == 0, text
    [pair] = [json.loads(x) for x in dpo.read_text().splitlines()]
    assert pair["chosen"][0]["content"] == "1.5 months' rent (§ 8)."
    assert pair["rejected"][0]["content"] == "2 months."
    assert "1 chosen equals rejected" in text
    code, text = cli_run("data", "from-evals", "nope", "--out", str(dpo))
    assert_clean_error(code, text, "no eval run 'nope'")
    code, text = cli_run("data", "validate", str(dpo))
    assert code == 0, text
