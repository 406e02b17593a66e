"""The reporter: the workers' results -> one ``kind="multi"`` :class:`AgentResult`.

Each answer is attributed to its subtask (in the text, and in ``metadata["subtasks"]``);
sources, tool calls and steps of every worker are kept; tokens and cost are summed.
"""

from __future__ import annotations

from collections.abc import Callable

from agentcycle.agents import AgentResult, Step

Reporter = Callable[[str, list[str], list[AgentResult]], AgentResult]


def merge_results(task: str, subtasks: list[str], results: list[AgentResult]) -> AgentResult:
    merged = AgentResult(answer="", kind="multi")
    parts, attribution, failed = [], [], []
    seen_sources: set[tuple[str, str]] = set()
    for index, (subtask, result) in enumerate(zip(subtasks, results, strict=True)):
        worker = str(result.metadata.get("worker", ""))
        if result.status == "failed":
            failed.append(index)
            parts.append(f"{index + 1}. {subtask}\n[not answered: {result.error}]")
        else:
            parts.append(f"{index + 1}. {subtask}\n{result.answer.strip()}")
        for source in result.sources:
            if (source.source, source.heading) not in seen_sources:
                seen_sources.add((source.source, source.heading))
                merged.sources.append(source)
        merged.tool_calls.extend(result.tool_calls)
        merged.steps.extend(result.steps)
        merged.steps.append(Step(kind="agent", name=f"subtask {index + 1}",
                                 latency_ms=result.latency_ms,
                                 detail={"task": subtask, "worker": worker,
                                         "status": result.status}))
        merged.merge_usage(result)
        attribution.append({"index": index, "task": subtask, "answer": result.answer,
                            "status": result.status, "error": result.error, "worker": worker,
                            "kind": result.kind, "model": result.model,
                            "deliveries": result.metadata.get("deliveries"),
                            "trace_id": result.trace_id, "latency_ms": result.latency_ms})
    if len(subtasks) == 1 and not failed:
        merged.answer = results[0].answer.strip()
    else:
        merged.answer = "\n\n".join(parts)
    models = list(dict.fromkeys(r.model for r in results if r.model))
    backends = list(dict.fromkeys(r.backend for r in results if r.backend))
    merged.model, merged.backend = ",".join(models), ",".join(backends)
    merged.metadata = {"subtasks": attribution, "failed": failed,
                       "workers": sorted({a["worker"] for a in attribution if a["worker"]})}
    if failed and len(failed) == len(results):
        merged.status = "failed"
        merged.error = "every subtask failed: " + "; ".join(
            f"{i + 1}: {results[i].error}" for i in failed)
    return merged
