"""The real lifecycle on a small slice: real model, real Qdrant local mode, real MLflow,
real servers on 127.0.0.1, real LoRA training."""

import contextlib
import dataclasses
import io
import json

import pytest

from agentcycle._hardware import native_bf16
from agentcycle.demo import TRAIN_MAX_LENGTH, DemoOptions, _base_key, run_demo
from agentcycle.finetune import TrainParams

SLICE = DemoOptions(test_limit=4, train_limit=8, tool_test_limit=2, tool_records=2,
                    concurrency=4, max_tokens=24,
                    params=TrainParams(max_steps=3, batch_size=2, max_length=TRAIN_MAX_LENGTH))


@pytest.mark.slow
def test_demo_on_a_slice_writes_a_report_and_logs_everything(settings):
    result = run_demo(settings, SLICE)

    base, tuned = result.summaries
    assert (base.label, tuned.label) == ("base", "fine-tuned")
    assert base.cases == tuned.cases == 4 and base.errors == tuned.errors == 0
    assert {r.output.model for r in tuned.results} == {"legal-tuned"}, "routed to the tuned model"
    assert tuned.p50_latency_ms > 0 and tuned.tokens_per_s > 0
    # Each evaluation is an eval run of the legal suite: run.json, HTML, MLflow run.
    assert set(tuned.run.scorers) == {"keywords", "context_recall", "similarity"}
    assert tuned.context_recall > 0, "the RAG agent's sources reach the context scorer"
    from agentcycle.evals import compare_runs, load_run

    assert load_run(tuned.run.run_id).metrics == tuned.run.metrics
    assert compare_runs(base.run, tuned.run).matched == 4
    assert (result.report_dir.parent / "evals" / "runs" / tuned.run.run_id
            / "report.html").is_file()

    report = json.loads((result.report_dir / "report.json").read_text())
    assert [m["label"] for m in report["models"]] == ["base", "fine-tuned"]
    assert report["finetune_steps"] == 3
    assert report["train_pairs"] == report["rag_examples"] == 8
    assert report["answer_form"] == "quote"  # trained to quote the sentence, then the fact
    # one tool record with a call is two examples (the call, the answer after the result)
    assert report["train_examples"] == 8 + report["tool_examples"] >= 8 + 2
    assert [t["label"] for t in report["tool_use"]] == ["base", "fine-tuned"]
    assert report["tool_use"][1]["cases"] == 2 and 0 <= report["tools_paired"]["mcnemar_p"] <= 1
    assert 0 <= report["rag_paired"]["mcnemar_p"] <= 1
    # registered with its metrics and lineage; @champion moves only if every gate passed
    from agentcycle.finetune.registry import list_versions

    registered = report["registry"]
    (version,) = [v for v in list_versions("legal-tuned", settings)
                  if v.version == registered["version"]]
    assert version.tags["agentcycle.finetune_run"] == result.finetune_run_id
    assert "metric.legal-test.keywords.pass_rate" in version.tags
    gates_passed = all(g.split(": ")[1].startswith("pass") for g in registered["gates"])
    assert ("champion" in version.aliases) == gates_passed
    assert (result.report_dir / "report.png").read_bytes()[:4] == b"\x89PNG"
    markdown = (result.report_dir / "report.md").read_text()
    assert "Fine-tuning changed accuracy" in markdown and "list price" in markdown
    assert "McNemar" in markdown and "## Tool use: 2 held-out tool prompts" in markdown
    assert report["reference_cost_per_1k_tokens"] > 0  # gpt-4o-mini is in LiteLLM's map

    assert (result.tuned_model_dir / "model.safetensors").is_file()
    assert (result.tuned_model_dir / "adapter" / "adapter_config.json").is_file()

    import mlflow

    run = mlflow.get_run(result.finetune_run_id)
    assert run.data.params["rank"] == "16"
    assert run.data.params["examples"] == str(report["train_examples"])
    assert "final_train_loss" in run.data.metrics
    losses = mlflow.MlflowClient().get_metric_history(run.info.run_id, "train_loss")
    assert len(losses) == 3
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"adapter", "loss_curve.png", "data"} <= artifacts
    assert report["base_answers_cached"] == 0 and "reused" not in markdown


@pytest.mark.slow
def test_the_demos_base_evaluation_is_answered_from_the_cache_the_second_time(
        settings, legal_agent, embedder):
    """What a repeat demo relies on, on the session's server: the base model's answers
    cached under the demo's key, reused and re-scored; another key asks the model."""
    from rich.console import Console

    from agentcycle._progress import phase_progress
    from agentcycle.demo import _Base, _evaluate, legal_suite_path
    from agentcycle.evals import OutputCache, ScoreContext, load_suite

    suite = load_suite(legal_suite_path()).limited(2)
    context = ScoreContext(settings=settings, embedder=embedder)
    with (contextlib.closing(OutputCache.default(settings)) as cache,
          phase_progress(Console(file=io.StringIO())) as progress):
        def evaluate(key: str):
            return _evaluate(progress, "base", legal_agent, suite, context, "base", SLICE,
                             base=_Base(label=key, cache=cache)).run.results

        first = evaluate("base:k1")
        again = evaluate("base:k1")
        other = evaluate("base:k2")
    assert not any(r.cached for r in first) and all(r.cached for r in again)
    assert [r.output.text for r in again] == [r.output.text for r in first]
    assert [r.scores for r in again] == [r.scores for r in first]  # scored again, alike
    assert not any(r.cached for r in other)
    assert cache.hits == 2


@pytest.mark.heavy  # its path: the slice demo and the cached evaluation above
def test_a_second_demo_reuses_the_base_models_answers(settings):
    """A second demo reuses the base model's answers (same weights, data, settings and
    code) and asks only the new tuned model."""
    base = run_demo(settings, SLICE).summaries[0]
    again = run_demo(settings, dataclasses.replace(
        SLICE, params=dataclasses.replace(SLICE.params, max_steps=1)))
    assert again.base_answers_cached == 4 + 2  # RAG cases + tool cases
    assert ({r.id: r.output.text for r in again.summaries[0].results}
            == {r.id: r.output.text for r in base.results})
    assert all(r.cached for r in again.summaries[0].results)
    tuned_results = again.summaries[1].results + again.tool_summaries[1].run.results
    assert not any(r.cached for r in tuned_results)
    assert json.loads((again.report_dir / "report.json").read_text())["base_answers_cached"] == 6
    again_markdown = (again.report_dir / "report.md").read_text()
    assert "6 base-model answers reused" in again_markdown
    (base_row,) = [line for line in again_markdown.splitlines() if line.startswith("| base |")]
    assert "| cached |" in base_row, "no tokens/s for answers timed in an earlier run"


def test_the_base_models_cached_answers_are_keyed_by_what_decides_them(settings, tmp_path):
    from agentcycle._digest import tree_sha256
    from agentcycle.models import chat_model_dir

    base_dir = chat_model_dir(settings)
    key = _base_key(settings, base_dir, DemoOptions())
    assert key == _base_key(settings, base_dir, DemoOptions(seed=8, tool_records=4))
    for changed in ({"keep_sentences": 3}, {"top_k": 2}, {"max_tokens": 64}):
        assert _base_key(settings, base_dir, DemoOptions(**changed)) != key, changed
    with pytest.MonkeyPatch.context() as patch:  # the engine's dtype on the other CPU kind
        patch.setattr("agentcycle.demo.native_bf16", lambda: not native_bf16())
        assert _base_key(settings, base_dir, DemoOptions()) != key

    # weights, corpus and code are hashed by content and name
    (tmp_path / "a").write_bytes(b"weights")
    before = tree_sha256(tmp_path)
    (tmp_path / "a").write_bytes(b"weightz")
    edited = tree_sha256(tmp_path)
    (tmp_path / "a").rename(tmp_path / "b")
    assert len({before, edited, tree_sha256(tmp_path)}) == 3


def test_a_model_whose_answers_all_came_from_the_cache_shows_no_tokens_per_s():
    from agentcycle.evals.results import CaseResult, EvalRun
    from agentcycle.report import ModelEval, _rate

    def summary(*cached: bool) -> ModelEval:
        results = [CaseResult(id=str(i), input="q", cached=c) for i, c in enumerate(cached)]
        return ModelEval("m", EvalRun(run_id="r", suite="legal-test", target="t",
                                      results=results, metrics={"tokens_per_s": 12.5}))

    assert _rate(summary(True, True)) == "cached"  # timed in an earlier run
    assert _rate(summary(True, False)) == _rate(summary(False, False)) == "12.5"
