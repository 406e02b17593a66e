"""The learned quality router: send a request to the cheap model unless a scorer trained
on the project's own evaluation results predicts the cheap model will fail it.

The scorer is a scikit-learn classifier over MiniLM embeddings of the prompt (the last
user message) that predicts ``p_fail``, the probability that the cheap model fails.
The threshold is calibrated so that a target share of the training prompts goes to the
strong model (RouteLLM's "calibrate to a share of strong calls"), on k-fold held-out
predictions for those prompts. They are kept, so the share can be re-calibrated without
retraining.

Persisted as one skops file (no pickle): the classifier plus JSON metadata (embedder,
threshold, share, training size, cross-validated metrics).
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agentcycle._jsonl import read_jsonl
from agentcycle.errors import ConfigError, DataError
from agentcycle.router.quality_curve import CurveResult, cost_quality_curve

__all__ = [
    "CurveResult", "QualityRouter", "cost_quality_curve", "cross_val_p_fail", "embedder_name",
    "last_user_text", "read_labels", "train_quality_router",
]

FORMAT = "agentcycle-quality-router/1"
MIN_EXAMPLES = 10
MIN_PER_CLASS = 3
CLASSIFIERS = ("logreg", "knn")


def last_user_text(messages: list[dict[str, Any]]) -> str:
    """The text the scorer sees: the last user message (text parts joined)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content", "")
            if isinstance(content, list):  # OpenAI content parts
                content = " ".join(str(p.get("text", "")) for p in content
                                   if isinstance(p, dict))
            return str(content)
    raise DataError("the request has no user message to route on")


def embedder_name(embedder) -> str:
    """A stable name for the embedding model (the bundled one lives in a 'model' dir)."""
    path = Path(getattr(embedder, "model_dir", "unknown"))
    return path.parent.name if path.name == "model" else path.name


def _check_labels(prompts: list[str], cheap_passed: list[bool]) -> np.ndarray:
    if len(prompts) != len(cheap_passed):
        raise DataError(f"{len(prompts)} prompts but {len(cheap_passed)} pass/fail labels")
    failed = np.array([not bool(p) for p in cheap_passed], dtype=int)
    n_fail = int(failed.sum())
    n_pass = len(failed) - n_fail
    if len(prompts) < MIN_EXAMPLES:
        raise DataError(f"too few evaluation results to train the quality router: "
                        f"{len(prompts)} (need at least {MIN_EXAMPLES})")
    if min(n_fail, n_pass) < MIN_PER_CLASS:
        raise DataError(f"the cheap model passed {n_pass} and failed {n_fail} of "
                        f"{len(prompts)} cases: the router needs at least {MIN_PER_CLASS} "
                        "of each to learn which requests it fails")
    if any(not isinstance(p, str) or not p.strip() for p in prompts):
        raise DataError("every training prompt must be non-empty text")
    return failed


def _classifier(kind: str):
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    if kind == "logreg":
        # Balanced classes: the cheap model's failures may be a minority (or a majority).
        # Unit-length embeddings need no scaling; C=1 measured as good as a CV-chosen C.
        return LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000)
    if kind == "knn":
        return KNeighborsClassifier(n_neighbors=7, weights="distance", metric="cosine")
    raise ConfigError(f"unknown classifier '{kind}' (known: {', '.join(CLASSIFIERS)})")


def _fit(X: np.ndarray, failed: np.ndarray, kind: str):
    return _classifier(kind).fit(X, failed)


def _threshold(p_train: np.ndarray, strong_share: float) -> float:
    """``p_fail > threshold`` goes strong for ``strong_share`` of the training prompts."""
    if not 0.0 <= strong_share <= 1.0:
        raise ConfigError(f"strong_share must be between 0 and 1 (got {strong_share})")
    if strong_share <= 0.0:
        return 1.0  # never strong: p_fail is at most 1
    if strong_share >= 1.0:
        return -1.0  # always strong
    return float(np.quantile(p_train, 1.0 - strong_share, method="lower"))


class QualityRouter:
    """Predicts whether a request needs the strong model."""

    def __init__(self, model: Any, *, threshold: float, strong_share: float,
                 meta: dict[str, Any], train_p_fail: np.ndarray, embedder=None):
        self.model = model
        self.threshold = float(threshold)
        self.strong_share = float(strong_share)
        self.meta = meta
        self.train_p_fail = np.asarray(train_p_fail, dtype=float)
        self._embedder = embedder

    @property
    def embedder(self):
        if self._embedder is None:
            from agentcycle.models import Embedder, embedding_model_dir

            embedder = Embedder(embedding_model_dir())
            if embedder_name(embedder) != self.meta.get("embedder"):
                raise ConfigError(
                    f"the quality router was trained on '{self.meta.get('embedder')}' "
                    f"embeddings but the configured embedding model is "
                    f"'{embedder_name(embedder)}': retrain it (agentcycle router train-quality)")
            self._embedder = embedder
        return self._embedder

    def p_fail(self, prompts: list[str]) -> np.ndarray:
        """The predicted probability that the cheap model fails each prompt."""
        X = self.embedder.embed(list(prompts))
        if X.shape[1] != self.meta.get("embedding_dim", X.shape[1]):
            raise ConfigError(f"embedding size {X.shape[1]} differs from the trained "
                              f"{self.meta.get('embedding_dim')}: retrain the quality router")
        return self.model.predict_proba(X)[:, 1]

    def predict(self, messages: list[dict]) -> tuple[bool, float]:
        """(use_strong, p_fail_of_cheap) for one chat request."""
        p = float(self.p_fail([last_user_text(messages)])[0])
        return p > self.threshold, p

    async def apredict(self, messages: list[dict]) -> tuple[bool, float]:
        """predict() off the event loop: embedding the prompt is CPU work (5-50 ms)."""
        import asyncio

        return await asyncio.to_thread(self.predict, messages)

    def calibrate(self, strong_share: float) -> QualityRouter:
        """The same scorer with the threshold set for another share of strong calls."""
        return QualityRouter(self.model, threshold=_threshold(self.train_p_fail, strong_share),
                             strong_share=strong_share, meta=dict(self.meta),
                             train_p_fail=self.train_p_fail, embedder=self._embedder)

    def save(self, path: str | Path) -> None:
        """One skops file, written atomically (a half-written model never replaces one)."""
        import skops.io as sio

        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        meta = {**self.meta, "format": FORMAT, "threshold": self.threshold,
                "strong_share": self.strong_share}
        tmp = target.with_name(f".{target.name}.tmp")
        try:
            sio.dump({"model": self.model, "meta": json.dumps(meta),
                      "train_p_fail": self.train_p_fail}, tmp)
            tmp.replace(target)
        except OSError as exc:
            raise DataError(f"cannot save the quality router to {target}: "
                            f"{exc.strerror or exc}") from None
        finally:
            tmp.unlink(missing_ok=True)  # no stray temp file beside it
        _load_cached.cache_clear()

    @classmethod
    def load(cls, path: str | Path) -> QualityRouter:
        """Load a saved router; cached per path (and reloaded when the file changes)."""
        file = Path(path).expanduser().resolve()
        if not file.is_file():
            raise ConfigError(f"quality router model not found: {path} "
                              "(train one: agentcycle router train-quality)")
        return _load_cached(str(file), file.stat().st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _load_cached(path: str, _mtime_ns: int) -> QualityRouter:
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(file=path)
        if untrusted:
            raise ConfigError(f"{path}: refusing to load untrusted types {untrusted}")
        data = sio.load(path)
        meta = json.loads(data["meta"])
        model = data["model"]
    except ConfigError:
        raise
    except Exception as exc:  # not a zip, not skops, missing keys, bad JSON
        raise ConfigError(f"{path}: not a readable quality router model "
                          f"({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ConfigError(f"{path}: not an agentcycle quality router (format "
                          f"{meta.get('format') if isinstance(meta, dict) else None!r})")
    return QualityRouter(model, threshold=meta["threshold"], strong_share=meta["strong_share"],
                         meta=meta, train_p_fail=np.asarray(data.get("train_p_fail", [])))


def train_quality_router(prompts: list[str], cheap_passed: list[bool], *, embedder,
                         strong_share: float = 0.3, classifier: str = "logreg",
                         cv_folds: int = 5, seed: int = 0) -> QualityRouter:
    """Fit ``embedding(prompt) -> cheap model fails`` and calibrate the threshold.

    The threshold is the ``1 - strong_share`` quantile of k-fold held-out ``p_fail`` on
    the training prompts; ``meta["cv"]`` holds their metrics (ROC AUC, and APGR against
    an always-passing strong model) so a user can see whether the scorer learned anything.
    """
    failed = _check_labels(prompts, cheap_passed)
    _threshold(np.zeros(1), strong_share)  # validate the share before any work
    started = time.perf_counter()
    X = embedder.embed(list(prompts))
    model = _fit(X, failed, classifier)
    # Calibrate on held-out predictions for the training prompts: in-sample ones are
    # overconfident (a nearest-neighbour scorer returns each prompt's own label).
    p_train = _held_out(X, failed, classifier, cv_folds, seed)
    cv = _cv_metrics(p_train, failed)
    meta = {
        "embedder": embedder_name(embedder), "embedding_dim": int(X.shape[1]),
        "classifier": classifier, "train_size": len(prompts), "train_failed": int(failed.sum()),
        "cheap_accuracy": float(1 - failed.mean()), "cv": {"folds": cv_folds, **cv},
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "train_seconds": round(time.perf_counter() - started, 2),
        "sklearn": _sklearn_version(),
    }
    return QualityRouter(model, threshold=_threshold(p_train, strong_share),
                         strong_share=strong_share, meta=meta, train_p_fail=p_train,
                         embedder=embedder)


def folds_used(folds: int, cheap_passed: list[bool]) -> int:
    """The folds asked for, at most the smaller class's size (each fold holds one of it)."""
    failed = sum(not p for p in cheap_passed)
    return max(2, min(folds, failed, len(cheap_passed) - failed))


def _held_out(X: np.ndarray, failed: np.ndarray, classifier: str, folds: int,
              seed: int) -> np.ndarray:
    from sklearn.model_selection import StratifiedKFold

    folds = folds_used(folds, [not f for f in failed])
    p = np.zeros(len(failed))
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(X, failed):
        p[test] = _fit(X[train], failed[train], classifier).predict_proba(X[test])[:, 1]
    return p


def cross_val_p_fail(prompts: list[str], cheap_passed: list[bool], *, embedder,
                     classifier: str = "logreg", folds: int = 5, seed: int = 0) -> np.ndarray:
    """Held-out ``p_fail`` for every prompt: each predicted by a scorer that never saw it."""
    failed = _check_labels(prompts, cheap_passed)
    return _held_out(embedder.embed(list(prompts)), failed, classifier, folds, seed)


def _cv_metrics(p_held_out: np.ndarray, failed: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    curve = cost_quality_curve(p_held_out, [not f for f in failed])
    return {"roc_auc": round(float(roc_auc_score(failed, p_held_out)), 4),
            "apgr": round(curve.apgr, 4), "cpt50": round(curve.cpt(0.5), 4)}


def _sklearn_version() -> str:
    import sklearn

    return sklearn.__version__


@dataclass
class Labels:
    prompts: list[str]
    passed: list[bool]


def read_labels(path: str | Path) -> Labels:
    """Prompts and the cheap model's pass/fail from the project's evaluation results.

    Accepts a JSONL of ``{"input"|"prompt"|"question": ..., "passed": bool}``, or a JSON
    eval result: an eval run's ``run.json`` (or its folder), an object with
    ``results``/``cases`` (an ``EvalSummary``),
    ``models[0].results`` (the demo's report.json), a list of records, or MLflow's
    column table (``{"question": [...], "passed": [...]}``).
    """
    file = Path(path)
    if file.is_dir() and (file / "run.json").is_file():  # an eval run's folder
        file = file / "run.json"
    if not file.is_file():
        raise DataError(f"evaluation results not found: {path}")
    if file.suffix != ".json":  # JSONL: errors name the line
        data: Any = read_jsonl(file)
    else:
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"{path}: not valid JSON ({exc})") from None
    records = _records(data)
    if records is None:
        raise DataError(f"{path}: no per-case results found (expected records with a "
                        "prompt and 'passed')")
    prompts, passed = [], []
    for number, record in enumerate(records, start=1):
        prompt, ok = _prompt_and_passed(record)
        if prompt is None or ok is None:
            raise DataError(f"{path}: record {number} needs an 'input', 'prompt' or "
                            "'question' and a boolean 'passed'")
        prompts.append(prompt)
        passed.append(ok)
    if not prompts:
        raise DataError(f"{path}: no evaluation results in the file")
    return Labels(prompts, passed)


def _records(data: Any) -> list[dict] | None:
    if isinstance(data, list):
        return data
    if not isinstance(data, dict):
        return None
    for key in ("results", "cases"):
        if isinstance(data.get(key), list):
            return data[key]
    models = data.get("models")
    if isinstance(models, list) and models and isinstance(models[0], dict):
        return _records(models[0])
    if isinstance(data.get("passed"), list):  # a column table
        keys = [k for k, v in data.items() if isinstance(v, list)]
        return [dict(zip(keys, row, strict=False)) for row in zip(*(data[k] for k in keys),
                                                                   strict=False)]
    return None


def _prompt_and_passed(record: Any) -> tuple[str | None, bool | None]:
    if not isinstance(record, dict):
        return None, None
    case = record.get("case") if isinstance(record.get("case"), dict) else record
    value = next((case[k] for k in ("input", "prompt", "question") if case.get(k)), None)
    if isinstance(value, list):
        value = last_user_text(value)
    passed = record.get("passed")
    return (value if isinstance(value, str) else None,
            passed if isinstance(passed, bool) else None)
