"""The tool agent on the legal tool-use suite: valid tool-call rate, right tool, exact
arguments, no-call precision and task success, for a model behind the tool agent
(default: the bundled base model, served locally behind our gate).

    flock /tmp/bench.lock .venv/bin/python benchmarks/tool_agent.py [--limit N]
        [--model DIR_OR_NAME] [--max-tokens 128] [--recheck-cut-at N] [--json out.json]

``--recheck-cut-at N`` runs the cases whose model turn was cut at ``--max-tokens`` again
with a cap of N, and prints both columns: what the cap cost. Decoding is greedy and one
case runs at a time, so a case that was not cut answers the same under a higher cap.

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
    parser.add_argument("--max-steps", type=int, default=3)  # the demo's
    # The demo's cap: one call fits in ~60 tokens, two in one turn in up to 97.
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--recheck-cut-at", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from agentcycle.evals import load_suite
    from agentcycle.evals.scorers import tool_use_figures
    from agentcycle.examples import LEGAL_COLLECTION, legal_corpus_dir
    from agentcycle.models import embedding_model_dir
    from agentcycle.rag import Embedder, ingest
    from agentcycle.settings import Settings

    suite = load_suite(SUITE)
    if args.limit:
        suite.cases = suite.cases[: args.limit]
    settings = Settings(home=Path(tempfile.mkdtemp(prefix="tool-bench-")),
                        cache_dir=REPO / ".agentcycle" / "models")
    # search_corpus searches the statute, as in the demo
    ingest(legal_corpus_dir(), LEGAL_COLLECTION, settings,
           embedder=Embedder(embedding_model_dir(settings)))
    started = time.perf_counter()
    results = _run(suite, settings, args, args.max_tokens)
    elapsed = time.perf_counter() - started
    columns = {f"cap {args.max_tokens}": results}
    cut = [r.id for r in results if r.output.truncated]
    if args.recheck_cut_at and cut:
        again = suite.model_copy(update={"cases": [c for c in suite.cases if c.id in cut]})
        redone = {r.id: r for r in _run(again, settings, args, args.recheck_cut_at)}
        columns[f"cap {args.recheck_cut_at}"] = [redone.get(r.id, r) for r in results]
    figures = {name: tool_use_figures(rs, suite.cases) for name, rs in columns.items()}
    errored = sum(r.error is not None for r in results)
    first = next(iter(figures.values()))
    print(f"tool agent, {args.model or 'bundled base model'}, {len(suite.cases)} cases "
          f"({first['call_cases']} expect a call, {first['no_call_cases']} none), "
          f"{errored} errored, {elapsed:.0f} s; cut at {args.max_tokens} tokens: "
          f"{len(cut)} {cut}")
    print(f"{'figure':44}" + "".join(f"{name:>10}" for name in figures))
    for key, label in FIGURES:
        print(f"{label:44}" + "".join(
            f"{'n/a' if f[key] is None else f'{f[key]:.1%}':>10}" for f in figures.values()))
    print(f"tool calls made: {first['calls']}; cases with no call: {first['uncalled_cases']}")
    if args.json:
        args.json.write_text(json.dumps({"figures": figures, "errored": errored, "cut": cut,
                                         "seconds": elapsed, "model": args.model}, indent=2))


def _run(suite, settings, args, max_tokens: int) -> list:
    from agentcycle.evals import ScoreContext, open_target
    from agentcycle.evals.runner import run_suite_sync

    spec = f"agent:tools?max_steps={args.max_steps}&max_tokens={max_tokens}" + (
        f"&model={args.model}" if args.model else "")
    with open_target(spec, settings) as target:
        run = run_suite_sync(suite, target, concurrency=args.concurrency, retries=0,
                             context=ScoreContext(settings=settings))
    return run.results


if __name__ == "__main__":
    main()
