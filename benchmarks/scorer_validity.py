"""Scorer validity (issue 4): each scorer's agreement with human labels.

Runs every built-in scorer on its cases of the labelled set
(benchmarks/data/scorer_validity.yaml: legal-domain answers, contexts and tool calls,
each with the human verdict) and prints the share of cases where the scorer's pass/fail
equals the label. Goal: >= 0.85 for the deterministic and tool scorers.

The LLM judge (``llm_judge`` on its cases, and ``faithfulness`` in judge mode on the
faithfulness cases) runs on the bundled small local model, served by ModelServer: it is
a weak judge, and the table says so. ``--no-judge`` skips it.

    .venv/bin/python benchmarks/scorer_validity.py [--no-judge] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data" / "scorer_validity.yaml"
GOAL = 0.85
# The judge on 2 shared cores: few requests at a time, short replies (the verdict comes
# first; parse_verdict reads a truncated JSON reply), and a long timeout.
JUDGE_CONCURRENCY, JUDGE_MAX_TOKENS, JUDGE_TIMEOUT_S = 4, 24, 900.0
TOOLS = ("tool_name", "tool_args", "tool_f1", "tool_order", "step_count")


def kind_of(scorer: str, judged: bool) -> str:
    from agentcycle.evals.scorers.validity import DETERMINISTIC

    if judged:
        return "LLM judge (SmolLM2-135M)"
    if scorer in TOOLS:
        return "tool"
    return "deterministic" if scorer in DETERMINISTIC else "embedding"


async def score_all(items, ctx, judge_ctx, console):
    from agentcycle.evals.scorers.validity import by_scorer, score_labelled

    rows = []
    for name, group in by_scorer(items).items():
        if name == "llm_judge":
            continue
        rows.append((name, False, await score_labelled(group, ctx)))
    if judge_ctx is not None:
        groups = by_scorer(items)
        for name, options in (("llm_judge", {}), ("faithfulness", {"mode": "judge"})):
            started = time.perf_counter()
            console.print(f"judging {len(groups[name])} cases with the small local model "
                          f"({name} {options or ''}) ...")
            judged = await score_labelled(groups[name], judge_ctx, scorer=name,
                                          options=options, concurrency=JUDGE_CONCURRENCY)
            console.print(f"  done in {time.perf_counter() - started:.0f} s")
            rows.append((f"{name} (judge)" if options else name, True, judged))
    return rows


def render(rows, console) -> list[dict]:
    from rich.table import Table

    from agentcycle.evals.scorers.validity import agreement

    table = Table(title="Scorer validity: agreement with human labels")
    for column in ("scorer", "kind", "cases", "agree", "agreement", "always-pass",
                   "goal", "misses"):
        table.add_column(column, justify="left" if column in ("scorer", "kind", "misses")
                         else "right")
    records = []
    for name, judged_by_llm, judged in rows:
        agree, total = agreement(judged)
        kind = kind_of(name.split(" ")[0], judged_by_llm)
        has_goal = kind in ("deterministic", "tool")
        value = agree / total
        baseline = sum(j.item.label for j in judged) / total
        misses = [j.item.id for j in judged if not j.agrees]
        unparsed = sum("unparseable" in j.score.explanation for j in judged)
        errors = sum(j.error for j in judged)
        mark = "" if not has_goal else ("[green]met[/green]" if value >= GOAL
                                        else "[red]not met[/red]")
        table.add_row(name, kind, str(total), str(agree), f"{value:.2f}", f"{baseline:.2f}",
                      mark, ", ".join(misses[:6]) + (" ..." if len(misses) > 6 else ""))
        records.append({"scorer": name, "kind": kind, "cases": total, "agree": agree,
                        "agreement": round(value, 4), "always_pass": round(baseline, 4),
                        "misses": misses, "unparseable_verdicts": unparsed,
                        "errors": errors,
                        "cases_detail": [{"id": j.item.id, "label": j.item.label,
                                          "value": round(j.score.value, 3),
                                          "explanation": j.score.explanation} for j in judged]})
    pooled = [r for r in records if r["kind"] in ("deterministic", "tool")]
    agree, total = sum(r["agree"] for r in pooled), sum(r["cases"] for r in pooled)
    table.add_section()
    table.add_row("all deterministic + tool", "", str(total), str(agree), f"{agree / total:.2f}",
                  "", "", "")
    console.print(table)
    return records


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-judge", action="store_true", help="skip the LLM judge")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()

    from rich.console import Console

    from agentcycle.cli._common import quiet_libraries
    from agentcycle.evals.scorers.validity import DETERMINISTIC, load_labelled
    from agentcycle.evals.scoring import ScoreContext
    from agentcycle.models import chat_model_dir, embedding_model_dir
    from agentcycle.rag import Embedder
    from agentcycle.settings import Settings

    quiet_libraries()
    console = Console(width=150)
    items = load_labelled(args.data)
    console.print(f"{len(items)} labelled cases from {args.data.name}")
    ctx = ScoreContext(embedder=Embedder(embedding_model_dir()))
    started = time.perf_counter()
    if args.no_judge:
        rows = asyncio.run(score_all(items, ctx, None, console))
    else:
        from agentcycle.evals.scorers.judge import openai_judge
        from agentcycle.serving import ModelServer

        with ModelServer(chat_model_dir(Settings()), api_key="bench",
                         model_name="judge") as server:
            judge_ctx = ScoreContext(embedder=ctx.embedder, judge_model="judge",
                                     judge=openai_judge(server.base_url, "judge", "bench",
                                                        max_tokens=JUDGE_MAX_TOKENS,
                                                        timeout_s=JUDGE_TIMEOUT_S),
                                     judge_is_small_local=True)
            rows = asyncio.run(score_all(items, ctx, judge_ctx, console))
    records = render(rows, console)
    console.print(f"[dim]{time.perf_counter() - started:.0f} s; goal {GOAL} for the "
                  "deterministic and tool scorers. The judge is the bundled SmolLM2-135M: "
                  "a weak grader, compare it with the always-pass column.[/dim]")
    if args.json:
        args.json.write_text(json.dumps(records, indent=2), encoding="utf-8")
    goal_rows = [r for r in records if r["kind"] in ("deterministic", "tool")]
    assert all(r["scorer"] in DETERMINISTIC for r in goal_rows)
    return 0 if all(r["agreement"] >= GOAL for r in goal_rows) else 1


if __name__ == "__main__":
    sys.exit(main())
