"""A self-contained HTML report of one run: metrics, gates, charts (PNG, base64-embedded)
and every case. One file, no external URL: it opens from a CI artifact offline."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from agentcycle._files import atomic_write
from agentcycle.evals.gates import GateResult
from agentcycle.evals.results import EvalRun

_STYLE = """body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;
text-align:left;vertical-align:top}th{background:#f3f3f3}.pass{color:#1a7f37}
.fail{color:#c62828}.banner{background:#fff4e5;border:1px solid #f0a020;padding:.8em;
margin:1em 0}img{max-width:100%}td.answer{max-width:480px}"""


def render_html(run: EvalRun, gates: list[GateResult] | None = None) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>eval: "
             f"{_e(run.suite)}</title><style>{_STYLE}</style></head><body>",
             f"<h1>Eval run {_e(run.run_id)}</h1>",
             f"<p>suite <b>{_e(run.suite)}</b>, target <code>{_e(run.target)}</code>, "
             f"{len(run.results)} cases, concurrency {run.concurrency}, "
             f"{run.wall_s:.1f} s{'' if run.finished else ' (interrupted: partial)'}</p>"]
    if run.judge_is_small_local:
        parts.append("<div class='banner'><b>Note:</b> the LLM judge is the small local "
                     f"model ({_e(run.judge_model or 'bundled')}): its grades are weak; "
                     "confirm with a stronger judge before trusting judged scores.</div>")
    parts += [_metrics_table(run), _gates_table(gates or [])]
    for title, png in charts(run):
        parts.append(f"<h2>{_e(title)}</h2><img alt='{_e(title)}' "
                     f"src='data:image/png;base64,{base64.b64encode(png).decode()}'>")
    parts += [_cases_table(run), "</body></html>"]
    return "\n".join(parts)


def write_html(run: EvalRun, path: Path, gates: list[GateResult] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, render_html(run, gates))
    return path


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _metrics_table(run: EvalRun) -> str:
    rows = "".join(f"<tr><td>{_e(k)}</td><td>{v:.4g}</td></tr>"
                   for k, v in sorted(run.metrics.items()))
    return f"<h2>Metrics</h2><table><tr><th>metric</th><th>value</th></tr>{rows}</table>"


def _gates_table(gates: list[GateResult]) -> str:
    if not gates:
        return ""
    rows = "".join(f"<tr><td>{_e(g.gate)}</td><td>{g.value:.4g}</td><td class="
                   f"'{'pass' if g.passed else 'fail'}'>{'pass' if g.passed else 'FAIL'}</td></tr>"
                   for g in gates)
    return f"<h2>Gates</h2><table><tr><th>gate</th><th>value</th><th></th></tr>{rows}</table>"


def _cases_table(run: EvalRun) -> str:
    head = "".join(f"<th>{_e(s)}</th>" for s in run.scorers)
    rows = []
    for r in run.results:
        verdict = "error" if r.error else "pass" if r.passed else "fail"
        scores = "".join(
            f"<td class='{'pass' if s.passed else 'fail'}' title='{_e(s.explanation)}'>"
            f"{s.value:.2f}</td>" if (s := r.scores.get(name)) else "<td>-</td>"
            for name in run.scorers)
        rows.append(f"<tr><td>{_e(r.id)}</td><td>{_e(', '.join(r.tags))}</td>"
                    f"<td class='{'pass' if r.passed else 'fail'}'>{verdict}</td>{scores}"
                    f"<td>{_e(r.input)}</td><td class='answer'>{_e(r.output.text or r.error)}"
                    f"</td><td>{r.output.latency_ms:.0f}</td></tr>")
    return (f"<h2>Cases</h2><table><tr><th>id</th><th>tags</th><th>verdict</th>{head}"
            f"<th>input</th><th>answer</th><th>ms</th></tr>{''.join(rows)}</table>")


def charts(run: EvalRun) -> list[tuple[str, bytes]]:
    """(title, PNG) for: scores by tag, score distribution, cost and latency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    for title, draw in (("Scores by tag", _by_tag), ("Score distribution", _distribution),
                        ("Cost and latency", _cost_latency)):
        figure = draw(plt, run)
        buffer = io.BytesIO()
        figure.tight_layout()
        figure.savefig(buffer, format="png", dpi=90)
        plt.close(figure)
        out.append((title, buffer.getvalue()))
    return out


def _by_tag(plt, run: EvalRun):
    groups = run.tags or {"all": {"accuracy": run.metric("accuracy"),
                                  **{f"{s}.mean": run.metric(f"{s}.mean") for s in run.scorers}}}
    series = ["accuracy", *(f"{s}.mean" for s in run.scorers)]
    figure, axis = plt.subplots(figsize=(max(6, 1.2 * len(groups) * len(series) / 2), 3.5))
    width = 0.8 / len(series)
    for i, name in enumerate(series):
        axis.bar([x + i * width for x in range(len(groups))],
                 [groups[g].get(name, 0.0) for g in groups], width, label=name)
    axis.set_xticks([x + 0.4 - width / 2 for x in range(len(groups))], list(groups),
                    rotation=30, ha="right", fontsize=8)
    axis.set_ylim(0, 1)
    if axis.get_legend_handles_labels()[0]:  # a run without scores has no series
        axis.legend(fontsize=7)
    return figure


def _distribution(plt, run: EvalRun):
    figure, axis = plt.subplots(figsize=(6, 3.2))
    for name in run.scorers:
        values = [r.scores[name].value for r in run.results if name in r.scores]
        axis.hist(values, bins=10, range=(0, 1), alpha=0.5, label=name)
    axis.set_xlabel("score")
    axis.set_ylabel("cases")
    if axis.get_legend_handles_labels()[0]:  # a run without scores has no series
        axis.legend(fontsize=7)
    return figure


def _cost_latency(plt, run: EvalRun):
    ok = [r for r in run.results if r.error is None]
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    left.hist([r.output.latency_ms for r in ok] or [0], bins=20, color="#2a9d8f")
    left.set_xlabel("latency (ms)")
    left.set_ylabel("cases")
    for label, value in (("p50", run.metric("p50_latency_ms")),
                         ("p95", run.metric("p95_latency_ms"))):
        left.axvline(value, linestyle="--", color="#e76f51")
        left.annotate(label, (value, 0), xytext=(2, 2), textcoords="offset points", fontsize=7)
    right.scatter([r.output.latency_ms for r in ok], [r.output.cost_usd for r in ok], s=10)
    right.set_xlabel("latency (ms)")
    right.set_ylabel(f"cost per case (USD); total {run.metric('total_cost_usd'):.4f}")
    return figure
