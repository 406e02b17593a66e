"""`agentcycle router train-quality|quality-curve`: the learned quality router.

Registered on the `router` sub-app in cli/router.py.
"""

from __future__ import annotations

from pathlib import Path

import typer

from agentcycle.cli._common import console, friendly_errors, print_json, settings

RESULTS_HELP = ("The cheap model's evaluation results: a JSONL of {\"input\"|\"prompt\": ..., "
                "\"passed\": bool}, or an eval run's results JSON.")


def _default_model_path() -> Path:
    return settings().ensure_home() / "router" / "quality-router.skops"


def _embedder():
    from agentcycle.models import Embedder, embedding_model_dir

    return Embedder(embedding_model_dir(settings()))


@friendly_errors
def train_quality(
    results: Path = typer.Argument(..., help=RESULTS_HELP),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Where to save the router [default: <home>/router/"
                                  "quality-router.skops]."),
    strong_share: float = typer.Option(
        0.3, min=0.0, max=1.0, help="Share of requests to send to the strong model."),
    classifier: str = typer.Option("logreg", help="logreg or knn."),
    as_json: bool = typer.Option(False, "--json", help="Print the router's metadata as JSON."),
) -> None:
    """Train the quality router: prompt embedding -> does the cheap model fail it?"""
    from agentcycle._files import check_outputs
    from agentcycle.router.quality import read_labels, train_quality_router

    target = out or _default_model_path()
    check_outputs({"the results": results}, {"--out": target})
    labels = read_labels(results)
    router = train_quality_router(labels.prompts, labels.passed, embedder=_embedder(),
                                  strong_share=strong_share, classifier=classifier)
    router.save(target)
    meta = {**router.meta, "threshold": router.threshold, "strong_share": router.strong_share,
            "path": str(target)}
    if as_json:
        print_json(meta)
        return
    cv = meta["cv"]
    console.print(f"trained on {meta['train_size']} cases (cheap model failed "
                  f"{meta['train_failed']}); threshold p_fail > {router.threshold:.3f} sends "
                  f"{strong_share:.0%} to the strong model", highlight=False)
    console.print(f"held-out ({cv['folds']}-fold): ROC AUC {cv['roc_auc']:.3f}, APGR "
                  f"{cv['apgr']:.3f} (random 0.5), CPT(50%) {cv['cpt50']:.0%} (random 50%)",
                  highlight=False)
    console.print(f"saved to {target}", highlight=False)


@friendly_errors
def quality_curve(
    results: Path = typer.Argument(..., help=RESULTS_HELP),
    strong_results: Path | None = typer.Option(
        None, help="The strong model's results on the same prompts [default: an upper "
                   "bound, the strong model passes every case]."),
    folds: int = typer.Option(5, min=2, help="Cross-validation folds (held-out predictions)."),
    classifier: str = typer.Option("logreg", help="logreg or knn."),
    plot: Path | None = typer.Option(None, help="Write the curve as a PNG."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Cost/quality curve on held-out predictions: learned vs random routing."""
    from rich.table import Table

    from agentcycle._files import check_outputs
    from agentcycle.errors import DataError
    from agentcycle.router.quality import (
        cost_quality_curve,
        cross_val_p_fail,
        folds_used,
        read_labels,
    )

    if plot:
        if plot.suffix.lower() != ".png":
            raise DataError(f"--plot {plot}: the curve is written as a PNG; give a path "
                            "ending in .png")
        check_outputs({"the results": results, "--strong-results": strong_results or results},
                      {"--plot": plot})
    labels = read_labels(results)
    strong = None
    if strong_results:
        other = read_labels(strong_results)
        by_prompt = dict(zip(other.prompts, other.passed, strict=True))
        missing = [p for p in labels.prompts if p not in by_prompt]
        if missing:
            raise DataError(f"{strong_results}: no result for {len(missing)} of the prompts, "
                            f"e.g. {missing[0]!r}")
        strong = [by_prompt[p] for p in labels.prompts]
    p_fail = cross_val_p_fail(labels.prompts, labels.passed, embedder=_embedder(),
                              classifier=classifier, folds=folds)
    curve = cost_quality_curve(p_fail, labels.passed, strong)
    if plot:
        curve.plot(plot)
    if as_json:
        print_json({**curve.summary(),
                    "points": [curve.at_share(s / 10) for s in range(11)]})
        return
    folds = folds_used(folds, labels.passed)  # fewer when a class is smaller
    table = Table(title=f"quality router, {folds}-fold held-out ({curve.n} cases)")
    for column in ("strong calls", "learned quality", "random quality", "PGR learned"):
        table.add_column(column, justify="right")
    for s in range(11):
        point = curve.at_share(s / 10)
        table.add_row(f"{point['share']:.0%}", f"{point['quality']:.1%}",
                      f"{point['quality_random']:.1%}", f"{point['pgr']:.2f}")
    console.print(table)
    console.print(f"APGR {curve.apgr:.3f} (random {curve.apgr_random:.3f}); CPT(50%) "
                  f"{curve.cpt(0.5):.0%} (random {curve.cpt(0.5, random=True):.0%})",
                  highlight=False)
    if plot:
        console.print(f"plot: {plot}", highlight=False)
