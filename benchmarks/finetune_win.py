"""Does fine-tuning pay? The demo's recipe over several seeds, with the paired test.

The base model is evaluated once (seed 1's run) and every seed's fine-tuned model is
compared with it on the same questions: legal RAG key-fact accuracy on the test split
(answers capped at 40 words) and the tool-use figures on held-out tool prompts. Prints
each seed, then the mean and spread of the margins, with Wilson intervals and exact
McNemar p-values.

    .venv/bin/python benchmarks/finetune_win.py [--seeds 7,8,9] [--full] [--no-tools]
        [--top-layers N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="7,8,9")
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--no-tools", action="store_true")
    parser.add_argument("--tool-test-limit", type=int, default=None)
    parser.add_argument("--top-layers", type=int, default=None,
                        help="LoRA on the top N layers (default: the recipe's)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from rich.console import Console

    from agentcycle.demo import DemoOptions, run_demo
    from agentcycle.report import accuracy_passes, paired_test
    from agentcycle.settings import Settings

    console = Console()
    settings = Settings(home=Path(tempfile.mkdtemp(prefix="finetune-win-")),
                        cache_dir=Path(__file__).resolve().parent.parent / ".agentcycle" / "models")
    rows, reuse = [], None
    for seed in [int(s) for s in args.seeds.split(",")]:
        chosen = {"seed": seed, "tools": not args.no_tools, "reuse_base": reuse}
        if args.tool_test_limit is not None:
            chosen["tool_test_limit"] = args.tool_test_limit
        options = DemoOptions.full(**chosen) if args.full else DemoOptions(**chosen)
        options.params.seed = seed
        if args.top_layers is not None:
            options.params.top_layers = args.top_layers
        result = run_demo(settings, options, console)
        base, tuned = result.summaries[:2]
        reuse = (base, result.tool_summaries[0] if result.tool_summaries else None)
        fixed, broken, p = paired_test(accuracy_passes(base), accuracy_passes(tuned))
        row = {"seed": seed, "base": base.accuracy, "tuned": tuned.accuracy,
               "tuned_ci95": tuned.accuracy_ci95, "base_ci95": base.accuracy_ci95,
               "fixed": fixed, "broken": broken, "mcnemar_p": p, "cases": tuned.cases,
               "seconds": result.seconds}
        if len(result.tool_summaries) >= 2:
            tool_base, tool_tuned = result.tool_summaries[:2]
            tfixed, tbroken, tp = paired_test(tool_base.passed(), tool_tuned.passed())
            row["tools"] = {"base": tool_base.figures, "tuned": tool_tuned.figures,
                            "fixed": tfixed, "broken": tbroken, "mcnemar_p": tp}
        rows.append(row)
        console.print(f"seed {seed}: RAG {row['base']:.1%} -> {row['tuned']:.1%} "
                      f"({(row['tuned'] - row['base']) * 100:+.1f} points, +{fixed}/-{broken}, "
                      f"McNemar p = {p:.2g}, n = {row['cases']}), {result.seconds:.0f} s")
        if "tools" in row:
            t = row["tools"]
            console.print("  tools tuned: " + ", ".join(
                f"{k} {_pct(t['tuned'][k])}" for k in ("valid_call_rate", "right_tool",
                                                        "exact_args", "no_call_precision"))
                + f" (base: right tool {_pct(t['base']['right_tool'])}), "
                  f"McNemar p = {t['mcnemar_p']:.2g}")
    margins = [(r["tuned"] - r["base"]) * 100 for r in rows]
    spread = statistics.stdev(margins) if len(margins) > 1 else 0.0
    console.print(f"RAG margin over {len(rows)} seeds: {statistics.mean(margins):+.1f} "
                  f"+- {spread:.1f} points (min {min(margins):+.1f}); largest McNemar p = "
                  f"{max(r['mcnemar_p'] for r in rows):.2g}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=str))


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


if __name__ == "__main__":
    main()
