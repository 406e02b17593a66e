"""Run a suite against a target: concurrently, with retries, a cache and a journal.

Each case: target output (from the cache, or the target with retries and backoff) ->
every scorer -> one journal line, fsync'd. A case whose target still fails after its
retries is marked errored and the run goes on; an interrupted run keeps every
finished case, and ``resume=RUN_ID`` runs only the cases it lacks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from agentcycle.errors import ConfigError, DataError
from agentcycle.evals.cache import OutputCache
from agentcycle.evals.results import (
    CaseResult,
    EvalRun,
    Journal,
    by_tag,
    new_run_id,
    now_iso,
    runs_dir,
    save_run,
    summarize,
)
from agentcycle.evals.scoring import BoundScorer, ScoreContext
from agentcycle.evals.suite import Suite
from agentcycle.evals.targets import Target, TargetError
from agentcycle.evals.types import Case, Output

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]


async def run_suite(suite: Suite, target: Target, *, concurrency: int = 8, retries: int = 2,
                    cache: OutputCache | None = None, resume: str | None = None,
                    progress: Progress | None = None, context: ScoreContext | None = None,
                    label: str = "", folder: Path | None = None, run_id: str | None = None,
                    backoff_s: float = 0.5) -> EvalRun:
    """Run every case of ``suite`` against ``target`` and score it; returns the run.
    ``resume`` is the id of an interrupted run to continue; ``run_id`` names a new one."""
    scorers = suite.bound_scorers()
    context = context or ScoreContext()
    if resume is not None and (Path(resume).name != resume or resume in ("", ".", "..")):
        raise DataError(f"--resume '{resume}': give a run id from `agentcycle eval list`, "
                        "not a path")
    run_id = resume or run_id or new_run_id()
    folder = folder or runs_dir(context.settings) / run_id
    done = _resumed(folder, target, suite) if resume else {}
    journal = Journal(folder / "journal.jsonl")
    run = EvalRun(run_id=run_id, suite=suite.name, suite_path=str(suite.path or ""),
                  target=target.key, label=label or suite.name, started_at=now_iso(),
                  concurrency=concurrency, scorers=[s.name for s in scorers],
                  judge_model=context.judge_model,
                  judge_is_small_local=context.judge_is_small_local)
    if not resume:
        journal.write({"type": "header", **run.model_dump(exclude={"results", "metrics"})})
    todo = [c for c in suite.cases if c.id not in done]
    finished = dict(done)
    count = len(done)
    if progress:
        progress(count, len(suite.cases))
    semaphore = asyncio.Semaphore(max(1, concurrency))
    started = time.perf_counter()

    async def one(case: Case) -> None:
        nonlocal count
        async with semaphore:
            result = await _run_case(case, target, scorers, context, cache, retries, backoff_s)
        journal.write({"type": "case", "result": result.model_dump(mode="json")})
        finished[case.id] = result
        count += 1
        if progress:
            progress(count, len(suite.cases))

    try:
        async with asyncio.TaskGroup() as group:  # a raising case cancels the others
            for case in todo:
                group.create_task(one(case))
        run.finished = True
    except BaseExceptionGroup as errors:
        # Every case of a misconfigured suite raises the same error: the caller gets
        # that one error (one clear line in the CLI), not a group of tracebacks.
        raise _first(errors) from None
    finally:
        journal.close()
        # Finished or not, the run's file says where it stands (in suite order).
        run.results = [finished[c.id] for c in suite.cases if c.id in finished]
        run.wall_s = time.perf_counter() - started
        run.metrics = summarize(run.results, run.scorers, run.wall_s)
        run.tags = by_tag(run.results, run.scorers)
        save_run(run, folder)
    return run


def _first(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def run_suite_sync(suite: Suite, target: Target, **options) -> EvalRun:
    """``run_suite`` for code without an event loop (the CLI, the demo, scripts)."""

    async def main() -> EvalRun:
        # Sync agent functions run in the loop's threads: enough of them for the
        # concurrency asked (asyncio's default is min(32, cores + 4): 6 here).
        workers = max(options.get("concurrency", 8), 4)
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(workers))
        return await run_suite(suite, target, **options)

    return asyncio.run(main())


def _resumed(folder: Path, target: Target, suite: Suite) -> dict[str, CaseResult]:
    header, results = Journal.read(folder / "journal.jsonl")
    if header.get("target") and header["target"] != target.key:
        raise ConfigError(f"run {folder.name} was made against {header['target']}, not "
                          f"{target.key}: resume it with the same target")
    if header.get("suite") and header["suite"] != suite.name:
        raise ConfigError(f"run {folder.name} is of suite '{header['suite']}', not "
                          f"'{suite.name}'")
    # Errored cases are tried again; finished ones are kept as they are.
    return {r.id: r for r in results if r.error is None}


async def _run_case(case: Case, target: Target, scorers: list[BoundScorer],
                    context: ScoreContext, cache: OutputCache | None, retries: int,
                    backoff_s: float) -> CaseResult:
    output = cache.get(target.key, case) if cache else None
    cached, attempts = output is not None, 0
    if output is None:
        output, attempts = await _call_target(case, target, retries, backoff_s)
        if cache:
            cache.put(target.key, case, output)
    result = CaseResult(id=case.id, input=case.question, reference=case.reference,
                        tags=case.tags, output=output, error=output.error, cached=cached,
                        attempts=attempts)
    if output.error is None:
        await _score(case, output, scorers, context, result)
    return result


async def _call_target(case: Case, target: Target, retries: int,
                       backoff_s: float) -> tuple[Output, int]:
    for attempt in range(retries + 1):
        try:
            return await target.run(case), attempt + 1
        except ConfigError:
            raise  # the target refuses every case (bad key, URL, model): stop, say why
        except Exception as exc:  # one failing case must not sink the run
            error = _one_line(exc)
            log.info("case %s, attempt %d: %s", case.id, attempt + 1, error)
            if attempt < retries:
                await asyncio.sleep(backoff_s * 2 ** attempt)
    return Output(error=error), retries + 1


def _one_line(exc: BaseException) -> str:
    """A case's error as stored: our TargetError's own words, else the exception's type
    and first line (a target's own code may raise anything), at most 300 characters."""
    text = str(exc).strip()
    text = text.splitlines()[0] if text else ""
    if isinstance(exc, TargetError) and text:
        return text[:300]
    return (f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:300]


async def _score(case: Case, output: Output, scorers: list[BoundScorer],
                 context: ScoreContext, result: CaseResult) -> None:
    for bound in scorers:
        try:
            result.scores[bound.name] = await bound.score(case, output, context)
        except ConfigError:
            raise  # a misconfigured scorer fails every case: stop, say why
        except Exception as exc:  # a scorer failing on one case marks that case
            result.error = f"scorer '{bound.name}': {type(exc).__name__}: {exc}"
            return
    result.passed = all(s.passed for s in result.scores.values())
