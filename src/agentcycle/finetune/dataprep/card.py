"""The validation report as Rich tables (80 columns) and a dataset card (Markdown)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from rich.table import Table

from agentcycle._files import atomic_write
from agentcycle.finetune.dataprep.validate import DatasetReport, distribution

_SHOWN = 10  # problems/duplicates/leaks listed in full; the rest are counted


def report_tables(report: DatasetReport) -> list[Table]:
    """A summary table, then one listing the problems, duplicates and leaks by line."""
    summary = Table(title=f"dataset {Path(report.path).name}", show_header=False,
                    width=80)
    summary.add_column("what", style="bold", width=20)
    summary.add_column("value", overflow="fold")
    for name, value in _summary(report):
        summary.add_row(name, value)
    tables = [summary]
    findings = _findings(report)
    if findings:
        detail = Table(title="to fix", width=80)
        detail.add_column("line", justify="right", width=6)
        detail.add_column("problem", overflow="fold")
        for line, text in findings[:_SHOWN * 3]:
            detail.add_row(line, text)
        if len(findings) > _SHOWN * 3:
            detail.add_row("...", f"{len(findings) - _SHOWN * 3} more")
        tables.append(detail)
    return tables


def _summary(report: DatasetReport) -> list[tuple[str, str]]:
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(report.kinds.items())) or "none"
    stats = report.length_stats()
    lengths = (" / ".join(f"{k} {v:.0f}" for k, v in stats.items()) if stats else "-")
    rows = [("records", f"{report.records} of {report.lines} lines ({kinds})"),
            ("malformed/empty", str(len(report.problems))),
            ("duplicates", str(len(report.duplicates))),
            (f"length ({report.length_unit})", lengths),
            ("label mask", _mask(report))]
    if report.against:
        rows.append(("leakage", f"{len(report.leaks)} against {Path(report.against).name}"))
    rows.append(("verdict", "ok" if report.ok else "NOT ready to train"))
    return rows


def _mask(report: DatasetReport) -> str:
    if not report.answer_tokens:
        return report.label_mask
    stats = distribution(report.answer_tokens)
    return (f"{report.label_mask}: answer tokens min {stats['min']:.0f} / "
            f"mean {stats['mean']:.0f} / max {stats['max']:.0f}")


def _findings(report: DatasetReport) -> list[tuple[str, str]]:
    rows = [(str(line), text) for line, text in report.problems]
    rows += [(str(line), f"duplicate of line {first}") for line, first in report.duplicates]
    rows += [(str(report.rows[leak.train_index].line),
              f"leaks test {leak.kind} {leak.score:.2f}: {leak.test_text[:60]!r}")
             for leak in report.leaks]
    return rows


def render_card(report: DatasetReport, *, source: str = "", license: str = "",
                notes: str = "", splits: dict[str, int] | None = None) -> str:
    """A dataset card in the Hugging Face spirit: what it is, how it was made, its checks."""
    name = Path(report.path).name
    lines = [f"# Dataset card: {name}", "",
             f"- **File:** `{name}` ({report.records} records)",
             f"- **Source:** {source or 'not recorded'}",
             f"- **Checked:** {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
             f"- **License:** {license or 'not stated: set one before sharing'}", "",
             "## Contents", "", "| kind | records |", "|---|---:|"]
    lines += [f"| {kind} | {n} |" for kind, n in sorted(report.kinds.items())]
    if splits:
        lines += ["", "## Splits", "", "| split | records |", "|---|---:|"]
        lines += [f"| {split} | {n} |" for split, n in splits.items()]
    stats = report.length_stats()
    lines += ["", f"## Lengths ({report.length_unit})", ""]
    lines += (["| " + " | ".join(stats) + " |", "|" + "---:|" * len(stats),
               "| " + " | ".join(f"{v:.0f}" for v in stats.values()) + " |"]
              if stats else ["none"])
    lines += ["", "## Checks", "",
              f"- malformed or empty records: {len(report.problems)}",
              f"- duplicates: {len(report.duplicates)}",
              f"- label mask: {_mask(report)}",
              "- leakage: " + (f"{len(report.leaks)} training questions match or paraphrase "
                               f"a question of `{Path(report.against).name}`"
                               if report.against else "not checked (no test file given)"),
              f"- verdict: {'ok' if report.ok else 'NOT ready to train'}"]
    if notes:
        lines += ["", "## Notes", "", notes]
    return "\n".join(lines) + "\n"


def card_path(data_path: str | Path) -> Path:
    path = Path(data_path)
    return path.with_name(path.stem + ".card.md")


def write_card(report: DatasetReport, **details) -> Path:
    """The card beside the data (``train.jsonl`` -> ``train.card.md``), atomically."""
    path = card_path(report.path)
    atomic_write(path, render_card(report, **details))
    return path
