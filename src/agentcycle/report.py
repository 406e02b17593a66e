"""The comparison report: Markdown, JSON and a PNG chart, written atomically."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentcycle._files import atomic_write
from agentcycle.evals.compare import mcnemar_exact
from agentcycle.evals.results import CaseResult, EvalRun, wilson_interval

# The legal suite's scorer whose pass rate is the demo's headline accuracy.
ACCURACY_SCORER = "keywords"

CHART_METRICS = [
    ("accuracy", "accuracy (key facts)", "{:.0%}"),
    ("p50_latency_ms", "p50 latency (ms)", "{:.0f}"),
    ("tokens_per_s", "tokens/s per request", "{:.1f}"),
    ("cost_per_1k_tokens", "cost per 1K tokens (USD)", "{:.5f}"),
]


REFERENCE_CLOUD_MODEL = "gpt-4o-mini"


@dataclass
class ModelEval:
    """One model's eval run, seen through the demo's headline numbers."""

    label: str
    run: EvalRun

    @property
    def results(self) -> list[CaseResult]:
        return self.run.results

    @property
    def cases(self) -> int:
        return len(self.run.results)

    @property
    def errors(self) -> int:
        return int(self.run.metric("errors"))

    @property
    def accuracy(self) -> float:
        return self.run.metric(f"{ACCURACY_SCORER}.pass_rate")

    @property
    def accuracy_ci95(self) -> tuple[float, float]:
        return wilson_interval(round(self.accuracy * self.cases), self.cases)

    @property
    def similarity(self) -> float:
        return self.run.metric("similarity.mean")

    @property
    def context_recall(self) -> float:
        return self.run.metric("context_recall.mean")

    @property
    def model(self) -> str:
        return ",".join(sorted({r.output.model for r in self.results if not r.error}))

    def __getattr__(self, name: str) -> float:  # p50_latency_ms, tokens_per_s, ...
        if name.startswith("_") or name not in self.run.metrics:
            raise AttributeError(name)
        return self.run.metrics[name]

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "model": self.model, "run_id": self.run.run_id,
                "mlflow_run_id": self.run.mlflow_run_id, "cases": self.cases,
                "errors": self.errors, "accuracy": self.accuracy,
                "accuracy_ci95": self.accuracy_ci95, "similarity": self.similarity,
                "context_recall": self.context_recall, "metrics": self.run.metrics,
                "results": [r.model_dump(mode="json") for r in self.results]}


# A tool-use case is right when its call decision, tool and arguments all are.
TOOL_DECISION_SCORERS = ("valid_tool_calls", "right_tool", "exact_args", "no_call")
TOOL_FIGURES = [("valid_call_rate", "valid call JSON"), ("right_tool", "right tool"),
                ("exact_args", "exact arguments"), ("no_call_precision", "no-call precision"),
                ("no_call_recall", "no-call recall"), ("task_success", "task success")]


@dataclass
class ToolEval:
    """One model's run of the tool-use suite, seen through the tool-use figures."""

    label: str
    run: EvalRun
    cases: list[Any]

    @property
    def figures(self) -> dict[str, float | None]:
        from agentcycle.evals.scorers import tool_use_figures

        return tool_use_figures(self.run.results, self.cases)

    def passed(self) -> dict[str, bool]:
        """Each case's verdict; an errored case (no answer) is a failed one."""
        return {r.id: r.error is None and all(name in r.scores and r.scores[name].passed
                                              for name in TOOL_DECISION_SCORERS)
                for r in self.run.results}

    @property
    def accuracy(self) -> float:
        passed = self.passed()
        return sum(passed.values()) / len(passed) if passed else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "run_id": self.run.run_id, "figures": self.figures,
                "accuracy": self.accuracy, "cases": len(self.run.results)}


def paired_test(base: dict[str, bool], tuned: dict[str, bool]) -> tuple[int, int, float]:
    """(fixed, broken, exact McNemar p) over the cases both runs answered."""
    common = base.keys() & tuned.keys()
    fixed = sum(tuned[c] and not base[c] for c in common)
    broken = sum(base[c] and not tuned[c] for c in common)
    return fixed, broken, mcnemar_exact(fixed, broken)


def reference_cost_per_1k(summary: ModelEval, model: str = REFERENCE_CLOUD_MODEL) -> float:
    """What the same prompt and completion tokens would cost at a cloud model's list
    price (LiteLLM's price map): priced, not run, and labelled so in the report."""
    from agentcycle.evals.targets import list_price

    prompt = int(summary.run.metric("prompt_tokens"))
    completion = int(summary.run.metric("completion_tokens"))
    if not prompt + completion:
        return 0.0
    return 1000 * list_price(model, prompt, completion) / (prompt + completion)


def write_report(folder: Path, summaries: list[ModelEval], extra: dict[str, Any], *,
                 tool_summaries: list[ToolEval] | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tool_summaries = tool_summaries or []
    extra = {**extra, "reference_cloud_model": REFERENCE_CLOUD_MODEL,
             "reference_cost_per_1k_tokens": reference_cost_per_1k(summaries[-1])}
    if len(summaries) >= 2:
        extra["rag_paired"] = dict(zip(("fixed", "broken", "mcnemar_p"), paired_test(
            accuracy_passes(summaries[0]), accuracy_passes(summaries[1])), strict=True))
    if len(tool_summaries) >= 2:
        extra["tools_paired"] = dict(zip(("fixed", "broken", "mcnemar_p"), paired_test(
            tool_summaries[0].passed(), tool_summaries[1].passed()), strict=True))
    data = {"models": [s.as_dict() for s in summaries],
            "tool_use": [t.as_dict() for t in tool_summaries], **extra}
    atomic_write(folder / "report.json", json.dumps(data, indent=2, default=str))
    atomic_write(folder / "report.md", render_markdown(summaries, extra, tool_summaries))
    write_chart(folder / "report.png", summaries, extra["reference_cost_per_1k_tokens"])


def accuracy_passes(summary: ModelEval) -> dict[str, bool]:
    """Pass or fail per answered case: an errored case (a timeout) is left out of the
    paired test rather than counted against the model that hit it."""
    return {r.id: ACCURACY_SCORER in r.scores and r.scores[ACCURACY_SCORER].passed
            for r in summary.results if r.error is None}


def render_tool_markdown(tool_summaries: list[ToolEval], extra: dict[str, Any]) -> list[str]:
    if not tool_summaries:
        return []
    lines = ["", f"## Tool use: {extra.get('tool_test_cases')} held-out tool prompts", "",
             "| figure | " + " | ".join(t.label for t in tool_summaries) + " |",
             "|---|" + "---|" * len(tool_summaries)]
    figures = [t.figures for t in tool_summaries]
    for key, title in TOOL_FIGURES:
        cells = ["n/a" if f[key] is None else f"{f[key]:.1%}" for f in figures]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    cells = []
    for t in tool_summaries:
        n = len(t.run.results)
        low, high = wilson_interval(round(t.accuracy * n), n)
        cells.append(f"{t.accuracy:.1%} ({low:.0%}-{high:.0%})")
    lines.append("| all decisions right (95% CI) | " + " | ".join(cells) + " |")
    if paired := extra.get("tools_paired"):
        lines += ["", f"Paired over the same prompts: {paired['fixed']} fixed, "
                      f"{paired['broken']} broken, exact McNemar p = {paired['mcnemar_p']:.2g}."]
    return lines


def _rate(summary: ModelEval) -> str:
    """Tokens/s leaves cached answers out (their time is an earlier run's): a model
    whose answers all came from the cache has none."""
    if summary.results and all(r.cached for r in summary.results):
        return "cached"
    return f"{summary.tokens_per_s:.1f}"


def render_markdown(summaries: list[ModelEval], extra: dict[str, Any],
                    tool_summaries: list[ToolEval] | None = None) -> str:
    lines = ["# agentcycle demo report", "",
             f"Legal example, test split: {extra.get('test_cases')} questions never seen in "
             f"training. Fine-tuned on {extra.get('train_examples')} train examples in "
             f"{extra.get('finetune_steps')} steps ({extra.get('finetune_seconds')} s)"
             + _answer_form_note(extra.get("answer_form")) + ".", "",
             "| model | accuracy | context recall | similarity | p50 latency (ms) | tokens/s "
             "| cost per 1K tokens (USD) | errors |",
             "|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        lines.append(f"| {s.label} | {s.accuracy:.1%} | {s.context_recall:.1%} "
                     f"| {s.similarity:.3f} "
                     f"| {s.p50_latency_ms:.0f} | {_rate(s)} "
                     f"| {s.cost_per_1k_tokens:.5f} | {s.errors} |")
    if len(summaries) >= 2:
        base, tuned = summaries[0], summaries[1]
        delta = tuned.accuracy - base.accuracy
        fixed, broken = extra["rag_paired"]["fixed"], extra["rag_paired"]["broken"]
        lines += ["", f"Fine-tuning changed accuracy by **{delta * 100:+.1f} points** "
                      f"({base.accuracy:.1%} -> {tuned.accuracy:.1%}): {fixed} questions fixed, "
                      f"{broken} broken. 95% intervals (Wilson): base "
                      f"{base.accuracy_ci95[0]:.0%}-{base.accuracy_ci95[1]:.0%}, fine-tuned "
                      f"{tuned.accuracy_ci95[0]:.0%}-{tuned.accuracy_ci95[1]:.0%}; exact "
                      f"McNemar p = {extra['rag_paired']['mcnemar_p']:.2g} over "
                      f"{tuned.cases} questions."]
    lines += render_tool_markdown(tool_summaries or [], extra)
    lines += ["", f"For reference, the same tokens at {extra['reference_cloud_model']}'s list "
              f"price (LiteLLM's price map; priced, not run) would cost "
              f"${extra['reference_cost_per_1k_tokens']:.5f} per 1K tokens."]
    lines += ["", "Accuracy: every key fact of the reference (figure, deadline, name) appears "
              "in the answer. Context recall: the cited section was retrieved. Similarity: "
              "cosine of MiniLM embeddings of answer and reference. Scored by the legal suite "
              "(`examples/legal/suites/legal-test.yaml`); each evaluation is an eval run "
              "(`agentcycle eval compare` works on them). "
              "Local models cost $0 unless AGENTCYCLE_ENERGY_USD_PER_HOUR is set.", "",
              *([f"Registered as `{extra['registry']['uri']}` with its eval metrics and data "
                 f"lineage: {extra['registry']['champion']}.", ""] if extra.get("registry")
                else []),
              f"MLflow fine-tune run: `{extra.get('finetune_run_id')}`; tuned model: "
              f"`{extra.get('tuned_model_dir')}`; whole demo: {extra.get('demo_seconds')} s"
              + (f" ({extra['base_answers_cached']} base-model answers reused from an earlier "
                 "demo)." if extra.get("base_answers_cached") else "."), "",
              "![comparison](report.png)", ""]
    for s in summaries:
        lines += [f"## Sample answers: {s.label}", ""]
        for r in s.results[:5]:
            score = r.scores.get(ACCURACY_SCORER)
            mark = "pass" if score and score.passed else "fail"
            lines.append(f"- **{r.input}** -> {r.output.text or r.error} ({mark})")
        lines.append("")
    return "\n".join(lines)


def write_chart(path: Path, summaries: list[ModelEval], reference_cost: float = 0.0) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(CHART_METRICS), figsize=(14, 3.6))
    labels = [s.label for s in summaries]
    colors = ["#8c8c8c", "#2a9d8f", "#e76f51", "#264653"][: len(summaries)]
    for axis, (key, title, fmt) in zip(axes, CHART_METRICS, strict=True):
        values = [getattr(s, key) for s in summaries]
        bars = axis.bar(labels, values, color=colors)
        axis.set_title(title, fontsize=10)
        for bar, value in zip(bars, values, strict=True):
            axis.annotate(fmt.format(value), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                          ha="center", va="bottom", fontsize=9)
        axis.margins(y=0.2)
        if key == "accuracy":
            axis.set_ylim(0, 1)
        if key == "cost_per_1k_tokens" and reference_cost:
            axis.axhline(reference_cost, linestyle="--", color="#e76f51")
            axis.annotate(f"{REFERENCE_CLOUD_MODEL} list price (not run): ${reference_cost:.5f}",
                          (0.02, reference_cost), xycoords=("axes fraction", "data"),
                          va="bottom", fontsize=8, color="#e76f51")
            axis.set_ylim(0, reference_cost * 1.5)
    figure.suptitle("agentcycle demo: base vs fine-tuned (RAG, legal test split)")
    figure.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    figure.savefig(tmp, dpi=110)
    plt.close(figure)
    os.replace(tmp, path)


def _answer_form_note(form: str | None) -> str:
    if form == "quote":
        return "; its RAG answers quote the supporting sentence, then state the fact"
    return ""
