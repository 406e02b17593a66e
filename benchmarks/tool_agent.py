"""The tool agent on the legal tool-use suite: valid tool-call rate, right tool, exact
arguments, no-call precision and task success, for a model behind the tool agent
(default: the bundled base model, served locally behind our gate).

    flock /tmp/bench.lock .venv/bin/python benchmarks/tool_agent.py [--limit N]
        [--model DIR_OR_NAME] [--concurrency 1] [--json out.json]

The fine-tuning issue trains the model on tool use; this records the figures to beat.
Results go in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SUITE = REPO / "src/agentcycle/examples/legal/suites/legal-tools.yaml"

FIGURES = [("valid_call_rate", "valid tool-call JSON (per call)"),
           ("right_tool", "right tool (cases expecting a call)"),
           ("exact_args", "exact arguments (cases expecting a call)"),
           ("no_call_precision", "no-call precision"),
           ("no_call_recall", "no-call recall"),
           ("task_success", "task success (reference facts in answer)")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--model", default=None)
    # transformers serve's continuous batching slows badly on several ~1.4K-token prompts
    # at once here (4 together: 410 s, one alone: ~9 s), so one case at a time.
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=4)
    # The demo's cap: one call fits in ~60 tokens, two in one turn in up to 97.
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from agentcycle.evals import ScoreContext, load_suite, open_target
    from agentcycle.evals.runner import run_suite_sync
    from agentcycle.evals.scorers import tool_use_figures
    from agentcycle.settings import Settings

    suite = load_suite(SUITE)
    if args.limit:
        suite.cases = suite.cases[: args.limit]
    spec = f"agent:tools?max_steps={args.max_steps}&max_tokens={args.max_tokens}" + (
        f"&model={args.model}" if args.model else "")
    settings = Settings(home=Path(tempfile.mkdtemp(prefix="tool-bench-")),
                        cache_dir=REPO / ".agentcycle" / "models")
    started = time.perf_counter()
    with open_target(spec, settings) as target:
        run = run_suite_sync(suite, target, concurrency=args.concurrency, retries=0,
                             context=ScoreContext(settings=settings))
    elapsed = time.perf_counter() - started
    figures = tool_use_figures(run.results, suite.cases)
    errored = sum(r.error is not None for r in run.results)
    print(f"tool agent, {args.model or 'bundled base model'}, {len(suite.cases)} cases "
          f"({figures['call_cases']} expect a call, {figures['no_call_cases']} none), "
          f"{errored} errored, {elapsed:.0f} s")
    print(f"{'figure':44} {'value':>8}")
    for key, label in FIGURES:
        value = figures[key]
        print(f"{label:44} {'n/a' if value is None else f'{value:8.1%}':>8}")
    print(f"tool calls made: {figures['calls']}; cases with no call: "
          f"{figures['uncalled_cases']}")
    if args.json:
        args.json.write_text(json.dumps({"figures": figures, "errored": errored,
                                         "seconds": elapsed, "model": args.model}, indent=2))


if __name__ == "__main__":
    main()
