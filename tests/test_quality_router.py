"""The learned quality router on real MiniLM embeddings of the legal example's questions.

Labels are a learnable function of the prompt: the cheap model "fails" every question
about deposits (Part 2, §§ 8-14). Trained on the train split, judged on the others.
"""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from agentcycle.errors import ConfigError, DataError
from agentcycle.examples import legal_split
from agentcycle.finetune.data import read_jsonl
from agentcycle.router.quality import (
    QualityRouter,
    cost_quality_curve,
    cross_val_p_fail,
    last_user_text,
    read_labels,
    train_quality_router,
)


def _split(name: str) -> tuple[list[str], list[bool]]:
    # The example's original 172 pairs (q001-q172; 120 train): the figures below were
    # measured on them, before the fine-tuning issue added paraphrases and questions.
    records = [r for r in read_jsonl(legal_split(name)) if int(r["id"][1:]) <= 172]
    return ([r["question"] for r in records],
            [not 8 <= int(r["section"]) <= 14 for r in records])  # deposits fail


@pytest.fixture(scope="module")
def trained(embedder):
    prompts, passed = _split("train")
    return train_quality_router(prompts, passed, embedder=embedder, strong_share=0.25)


def test_learns_which_prompts_the_cheap_model_fails(trained):
    from sklearn.metrics import roc_auc_score

    test_prompts, test_passed = [], []
    for name in ("validation", "test"):
        prompts, passed = _split(name)
        test_prompts += prompts
        test_passed += passed
    p_fail = trained.p_fail(test_prompts)
    failed = [not p for p in test_passed]
    assert roc_auc_score(failed, p_fail) > 0.9
    # Calibrated on the training prompts, the share holds on unseen ones.
    assert abs(np.mean(p_fail > trained.threshold) - 0.25) < 0.1
    curve = cost_quality_curve(p_fail, test_passed)
    assert curve.apgr > 0.8 and curve.apgr_random == pytest.approx(0.5)
    assert curve.cpt(0.5) < 0.25 and curve.cpt(0.5, random=True) == pytest.approx(0.5, abs=0.02)
    assert trained.meta["cv"]["roc_auc"] > 0.9 and trained.meta["train_size"] == 120


def test_save_load_round_trip(trained, tmp_path):
    path = tmp_path / "router" / "quality.skops"
    trained.save(path)
    loaded = QualityRouter.load(path)
    assert QualityRouter.load(path) is loaded  # cached per path
    prompts, _ = _split("test")
    np.testing.assert_allclose(loaded.p_fail(prompts), trained.p_fail(prompts), atol=1e-6)
    assert loaded.threshold == trained.threshold and loaded.strong_share == 0.25
    assert loaded.meta["embedder"] == trained.meta["embedder"]
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "How much deposit may a landlord take?"}]
    use_strong, p = loaded.predict(messages)
    assert use_strong and p > loaded.threshold
    assert asyncio.run(loaded.apredict(messages)) == (use_strong, p)
    # Re-calibrating needs no retraining: more strong calls, a lower threshold.
    assert loaded.calibrate(0.6).threshold < loaded.threshold
    assert not loaded.calibrate(0.0).predict(messages)[0]
    assert loaded.calibrate(1.0).predict([{"role": "user", "content": "Hello"}])[0]


def test_bad_inputs_give_clear_errors(embedder, tmp_path):
    prompts, passed = _split("train")
    with pytest.raises(DataError, match="passed 120 and failed 0"):
        train_quality_router(prompts, [True] * len(prompts), embedder=embedder)
    with pytest.raises(DataError, match="too few"):
        train_quality_router(prompts[:4], passed[:4], embedder=embedder)
    with pytest.raises(DataError, match="labels"):
        train_quality_router(prompts, passed[:-1], embedder=embedder)
    with pytest.raises(ConfigError, match="strong_share"):
        train_quality_router(prompts, passed, embedder=embedder, strong_share=1.5)
    with pytest.raises(ConfigError, match="not found"):
        QualityRouter.load(tmp_path / "missing.skops")
    garbage = tmp_path / "garbage.skops"
    garbage.write_text("not a model")
    with pytest.raises(ConfigError, match="not a readable quality router"):
        QualityRouter.load(garbage)
    with pytest.raises(DataError, match="no user message"):
        last_user_text([{"role": "system", "content": "x"}])


def test_reads_eval_results_in_their_formats(tmp_path):
    jsonl = tmp_path / "results.jsonl"
    jsonl.write_text(json.dumps({"input": [{"role": "user", "content": "Q1"}], "passed": True})
                     + "\n" + json.dumps({"prompt": "Q2", "passed": False}) + "\n")
    assert read_labels(jsonl).prompts == ["Q1", "Q2"]
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps({"prompt": "Q1", "passed": True}) + "\n{oops\n")
    with pytest.raises(DataError, match=r"broken.jsonl:2: malformed JSON"):
        read_labels(broken)
    summary = tmp_path / "summary.json"  # an EvalSummary / the demo's report.json
    summary.write_text(json.dumps({"models": [{"label": "base", "results": [
        {"id": "q1", "question": "Q1", "passed": False}]}]}))
    assert read_labels(summary).passed == [False]
    run = tmp_path / "run-1"  # an eval run's folder (run.json)
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"run_id": "1", "results": [
        {"id": "q1", "input": "Q1", "passed": True, "output": {"text": "A"}}]}))
    assert read_labels(run).prompts == ["Q1"]
    table = tmp_path / "cases.json"  # MLflow's logged table
    table.write_text(json.dumps({"question": ["Q1", "Q2"], "passed": [True, False]}))
    assert read_labels(table).passed == [True, False]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "Q1", "passed": "yes"}) + "\n")
    with pytest.raises(DataError, match="record 1 needs"):
        read_labels(bad)
    with pytest.raises(DataError, match="not found"):
        read_labels(tmp_path / "none.jsonl")


def test_curve_arithmetic():
    # 4 cases, the cheap model fails the two with the highest p_fail: a perfect router.
    curve = cost_quality_curve([0.9, 0.8, 0.1, 0.2], [False, False, True, True],
                               strong_cost=[2.0] * 4)
    assert list(curve.quality) == [0.5, 0.75, 1.0, 1.0, 1.0]
    assert curve.cpt(0.5) == 0.25 and curve.cpt(1.0) == 0.5
    assert curve.apgr == pytest.approx(0.75) and curve.apgr_random == pytest.approx(0.5)
    assert list(curve.cost) == [0.0, 2.0, 4.0, 6.0, 8.0] and curve.cost_unit == "USD"


def test_cross_validated_predictions_are_held_out(embedder):
    prompts, passed = _split("train")
    p = cross_val_p_fail(prompts, passed, embedder=embedder, folds=4)
    assert p.shape == (120,) and cost_quality_curve(p, passed).apgr > 0.8


def test_cli_trains_and_draws_the_curve(tmp_path):
    import typer
    from typer.testing import CliRunner

    from agentcycle.cli.router_quality import quality_curve, train_quality

    app = typer.Typer()
    app.command("train-quality")(train_quality)
    app.command("quality-curve")(quality_curve)
    prompts, passed = _split("train")
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps({"input": q, "passed": p}) + "\n"
                               for q, p in zip(prompts, passed, strict=True)))
    out = tmp_path / "router.skops"
    runner = CliRunner()
    done = runner.invoke(app, ["train-quality", str(results), "--out", str(out),
                               "--strong-share", "0.2", "--json"])
    assert done.exit_code == 0, done.output
    meta = json.loads(done.output)
    assert meta["strong_share"] == 0.2 and meta["train_size"] == 120 and out.is_file()
    plot = tmp_path / "curve.png"
    done = runner.invoke(app, ["quality-curve", str(results), "--plot", str(plot), "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["apgr"] > 0.8 and plot.stat().st_size > 10_000
    one_class = tmp_path / "one.jsonl"
    one_class.write_text("".join(json.dumps({"input": q, "passed": True}) + "\n"
                                 for q in prompts))
    done = runner.invoke(app, ["train-quality", str(one_class)])
    assert done.exit_code == 1 and "passed 120 and failed 0" in done.output
