"""Issue 3: the learned quality router on the legal example, measured on held-out data.

1. Evaluate the cheap model (the bundled SmolLM2-135M with RAG: one passage, 48 tokens,
   keyword accuracy, as the demo does) on all 172 questions: its pass/fail labels.
2. The strong model: AGENTCYCLE_CLOUD_MODEL, evaluated, when configured; else the
   demo's fine-tuned model (`.agentcycle/demo/legal-tuned`) on the validation and test
   splits only (it was trained on the train split); else an upper bound, a strong model
   that passes every case (RouteLLM's "performance gap recovered" normalization).
3. k-fold cross-validated p_fail (every prediction by a scorer that never saw the
   prompt), repeated over 5 shuffles: the curve of strong-call share vs quality, learned
   vs random routing, with APGR and CPT(50%).
4. The calibrated operating point: per fold, train with strong_share=0.3 on the other
   folds and route the held-out fold; the share and quality it actually gets.
5. Cost: strong calls priced at gpt-4o-mini's list price (LiteLLM's map) for the
   measured tokens; the local model's calls cost 0.

Run: `python benchmarks/quality_router.py [--labels FILE]` (FILE: a previous run's
labels, written to <home>/bench/quality_router_labels.jsonl, to skip step 1).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np

REPO = Path(__file__).resolve().parent.parent
PRICE_MODEL = "gpt-4o-mini"
SHARE = 0.3
SEEDS = range(5)
FOLDS = 5


class CachedEmbedder:
    """Embeds every prompt once; the many cross-validation fits reuse the vectors."""

    def __init__(self, embedder, texts: list[str]):
        self.model_dir = embedder.model_dir
        self._vectors = dict(zip(texts, embedder.embed(texts), strict=True))

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.stack([self._vectors[t] for t in texts])


JOURNAL = REPO / ".agentcycle" / "bench" / "quality_router_journal.jsonl"


def measure_labels(settings, console, concurrency: int) -> list[dict]:
    """Ask the cheap (and, where there is one, the strong) model every question.

    Every answer is appended to a journal as it comes; a rerun asks only what is missing
    or errored (this shared machine can be slow enough for a call to time out).
    """
    import contextlib
    import secrets
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from rich.progress import Progress

    from agentcycle.evals.scorers.text import keyword_match
    from agentcycle.examples import LEGAL_COLLECTION, legal_corpus_dir, legal_split
    from agentcycle.finetune.data import read_jsonl
    from agentcycle.models import chat_model_dir, embedding_model_dir
    from agentcycle.rag import Embedder, RagAgent, ingest
    from agentcycle.router import Router
    from agentcycle.router.backends import cloud_backend, local_backend
    from agentcycle.serving import ModelServer

    splits = {name: [SimpleNamespace(**r) for r in read_jsonl(legal_split(name))]
              for name in ("train", "validation", "test")}
    cases = [c for split in splits.values() for c in split]
    split_of = {c.id: name for name, split in splits.items() for c in split}
    embedder = Embedder(embedding_model_dir(settings))
    ingest(legal_corpus_dir(), LEGAL_COLLECTION, settings, embedder=embedder)
    key = secrets.token_urlsafe(16)
    tuned_dir = REPO / ".agentcycle" / "demo" / "legal-tuned"
    cloud = cloud_backend(settings)
    JOURNAL.parent.mkdir(parents=True, exist_ok=True)
    done: dict[tuple[str, str], dict] = {}
    if JOURNAL.is_file():
        for line in JOURNAL.read_text().splitlines():
            record = json.loads(line)
            done[(record["model"], record["id"])] = record
    lock = threading.Lock()

    def run(backend, label, subset, progress):
        backend.timeout_s = 900.0  # a slow answer is still an answer
        todo = [c for c in subset if (label, c.id) not in done
                or done[(label, c.id)]["error"]]
        agent = RagAgent(settings, LEGAL_COLLECTION, Router([backend]), embedder=embedder,
                         top_k=1, max_tokens=48)
        task = progress.add_task(f"evaluate {label} + RAG", total=len(subset),
                                 completed=len(subset) - len(todo))

        def ask(case):
            record = {"model": label, "id": case.id}
            try:
                answer = agent.ask(case.question)
                record.update(passed=keyword_match(answer.answer, case.keywords), error=None,
                              answer=answer.answer, prompt_tokens=answer.prompt_tokens,
                              completion_tokens=answer.completion_tokens,
                              cost_usd=answer.cost_usd)
            except Exception as exc:  # a failed call is left out, and asked again next run
                record.update(passed=False, error=str(exc)[:200], answer="",
                              prompt_tokens=0, completion_tokens=0, cost_usd=0.0)
            with lock, JOURNAL.open("a") as journal:
                journal.write(json.dumps(record) + "\n")
                done[(label, case.id)] = record
            progress.advance(task)

        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(ask, todo))
        return {c.id: done[(label, c.id)] for c in subset}

    with Progress(console=console) as progress, contextlib.ExitStack() as stack:
        base = stack.enter_context(ModelServer(chat_model_dir(settings), api_key=key,
                                               model_name="base"))
        cheap = run(local_backend("base", base.base_url, "base", key), "base", cases, progress)
        strong, strong_kind = {}, "upper bound (passes every case)"
        if cloud:
            strong = run(cloud, settings.cloud_model, cases, progress)
            strong_kind = f"{settings.cloud_model} (evaluated)"
        elif tuned_dir.is_dir():
            held_out = splits["validation"] + splits["test"]
            server = stack.enter_context(ModelServer(tuned_dir, api_key=key,
                                                     model_name="legal-tuned"))
            strong = run(local_backend("legal-tuned", server.base_url, "legal-tuned", key),
                         "legal-tuned", held_out, progress)
            strong_kind = "the demo's fine-tuned model (validation + test splits only)"
    rows = []
    for case in cases:
        r, s = cheap[case.id], strong.get(case.id)
        rows.append({"id": case.id, "split": split_of[case.id], "question": case.question,
                     **{k: v for k, v in r.items() if k not in ("model", "id")},
                     "strong_passed": None if s is None or s["error"] else s["passed"],
                     "strong_cost_usd": None if s is None or not cloud else s["cost_usd"],
                     "strong_kind": strong_kind})
    return rows


def price(rows: list[dict]) -> np.ndarray:
    """Each case's strong call at the list price, for its measured tokens."""
    from agentcycle.router._litellm import import_litellm

    litellm = import_litellm()
    costs = []
    for row in rows:
        if row["strong_cost_usd"] is not None:
            costs.append(row["strong_cost_usd"])
            continue
        prompt, completion = litellm.cost_per_token(
            model=PRICE_MODEL, prompt_tokens=row["prompt_tokens"],
            completion_tokens=row["completion_tokens"])
        costs.append(prompt + completion)
    return np.array(costs)


def operating_point(prompts, passed, strong, embedder, classifier, seed) -> tuple[float, float]:
    """Train at strong_share=SHARE on k-1 folds, route the held-out fold: (share, quality)."""
    from sklearn.model_selection import StratifiedKFold

    from agentcycle.router.quality import train_quality_router

    failed = np.array([not p for p in passed])
    routed = np.zeros(len(prompts), dtype=bool)
    for train, test in StratifiedKFold(FOLDS, shuffle=True, random_state=seed).split(
            prompts, failed):
        router = train_quality_router([prompts[i] for i in train], [passed[i] for i in train],
                                      embedder=embedder, strong_share=SHARE,
                                      classifier=classifier, cv_folds=3)
        routed[test] = router.p_fail([prompts[i] for i in test]) > router.threshold
    quality = np.where(routed, strong, np.array(passed, dtype=float))
    return float(routed.mean()), float(quality.mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=Path, help="reuse a previous run's labels JSONL")
    parser.add_argument("--plot", type=Path, default=REPO / "docs" / "quality_router.png")
    parser.add_argument("--concurrency", type=int, default=4, help="questions in flight")
    args = parser.parse_args()
    os.environ.setdefault("AGENTCYCLE_CACHE", str(REPO / ".agentcycle" / "models"))
    home = Path(os.environ.setdefault("AGENTCYCLE_HOME",
                                      tempfile.mkdtemp(prefix="agentcycle-bench-")))
    from rich.console import Console
    from rich.table import Table

    from agentcycle.cli._common import quiet_libraries

    quiet_libraries()
    from agentcycle.models import embedding_model_dir
    from agentcycle.rag import Embedder
    from agentcycle.router.quality import CLASSIFIERS, cost_quality_curve, cross_val_p_fail
    from agentcycle.settings import Settings

    console = Console(width=110)
    settings = Settings()
    if args.labels:
        rows = [json.loads(line) for line in args.labels.read_text().splitlines() if line]
    else:
        rows = measure_labels(settings, console, args.concurrency)
        out = REPO / ".agentcycle" / "bench" / "quality_router_labels.jsonl"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(json.dumps(r) + "\n" for r in rows))
        console.print(f"labels: {out} (data dir {home})")
    errors = sum(1 for r in rows if r.get("error"))
    rows = [r for r in rows if not r.get("error")]  # a timeout says nothing about quality
    prompts = [r["question"] for r in rows]
    passed = [bool(r["passed"]) for r in rows]
    measured_strong = rows[0]["strong_passed"] is not None or any(
        r["strong_passed"] is not None for r in rows)
    keep = np.array([r["strong_passed"] is not None or not measured_strong for r in rows])
    strong = np.array([1.0 if r["strong_passed"] is None else float(r["strong_passed"])
                       for r in rows])
    costs = price(rows)
    embedder = CachedEmbedder(Embedder(embedding_model_dir(settings)), prompts)
    console.print(f"cheap model: {sum(passed)}/{len(rows)} passed ({errors} errors left out); "
                  f"strong: "
                  f"{rows[0]['strong_kind']}; curve over {int(keep.sum())} cases")

    results: dict[str, dict] = {}
    for classifier in CLASSIFIERS:
        curves = []
        for seed in SEEDS:
            p = cross_val_p_fail(prompts, passed, embedder=embedder, classifier=classifier,
                                 folds=FOLDS, seed=seed)
            curves.append(cost_quality_curve(
                p[keep], np.array(passed)[keep], strong[keep], strong_cost=costs[keep],
                cost_unit=f"USD at {PRICE_MODEL} list price, {int(keep.sum())} requests"))
        points = [operating_point(prompts, passed, strong, embedder, classifier, s)
                  for s in SEEDS]
        results[classifier] = {
            "apgr": [c.apgr for c in curves], "cpt50": [c.cpt(0.5) for c in curves],
            "cpt80": [c.cpt(0.8) for c in curves], "op_share": [s for s, _ in points],
            "op_quality": [q for _, q in points]}
        if classifier == "logreg":
            curve = curves[0]
            curve.quality = np.mean([c.quality for c in curves], axis=0)  # over the shuffles
            curve.cost = np.mean([c.cost for c in curves], axis=0)
            curve.plot(args.plot, title=f"Quality router, legal example: {FOLDS}-fold held-out, "
                                        f"mean of {len(curves)} shuffles",
                       operating_share=SHARE)

    summary = Table(title="quality router on held-out predictions (mean ± sd over 5 shuffles)")
    for column in ("router", "APGR", "CPT(50%)", "CPT(80%)",
                   f"share strong @ target {SHARE:.0%}", "quality there"):
        summary.add_column(column, justify="right")
    for name, r in results.items():
        summary.add_row(name, *(_ms(r[k]) for k in ("apgr", "cpt50", "cpt80", "op_share",
                                                    "op_quality")))
    summary.add_row("random", "0.500", "0.500", "0.800", f"{SHARE:.3f}",
                    f"{curve.cheap_quality + SHARE * curve.gap:.3f}")
    console.print(summary)
    table = Table(title="logreg router: strong-call share vs quality and cost")
    for column in ("strong calls", "quality learned", "quality random", "cost learned",
                   "cost random"):
        table.add_column(column, justify="right")
    for s in range(11):
        point = curve.at_share(s / 10)
        table.add_row(f"{point['share']:.0%}", f"{point['quality']:.1%}",
                      f"{point['quality_random']:.1%}", f"${point['cost']:.5f}",
                      f"${point['cost_random']:.5f}")
    console.print(table)
    console.print(f"cheap only {curve.cheap_quality:.1%}, strong only {curve.strong_quality:.1%} "
                  f"(cost ${curve.cost[-1]:.5f} for {curve.n} requests); plot: {args.plot}")
    print(json.dumps({"results": results, "curve": curve.summary()}, default=float))
    return 0


def _ms(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {sd:.3f}"


if __name__ == "__main__":
    sys.exit(main())
