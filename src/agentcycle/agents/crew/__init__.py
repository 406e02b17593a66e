"""A CrewAI crew as an agentcycle agent.

CrewAI pins versions agentcycle cannot share (``openai<3``, ``aiosqlite~=0.21``,
``portalocker==2.7``), so the crew runs in CrewAI's own environment, as a subprocess,
and talks to our router proxy or local model server by ``base_url`` like any OpenAI
client. :class:`CrewAgent` is an ordinary :class:`~agentcycle.agents.Agent`: the app, the
eval targets and the NATS workers take it like any other.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from agentcycle._processes import run as run_child
from agentcycle.agents._protocol import BaseAgent
from agentcycle.agents._result import AgentResult, Step, elapsed_ms
from agentcycle.errors import ConfigError, ServiceError

_RUNNER = Path(__file__).with_name("_runner.py")


class CrewAgent(BaseAgent):
    """One CrewAI agent and task, run by ``python`` (CrewAI's environment)."""

    kind = "crewai"

    def __init__(self, python: str | Path, *, base_url: str, model: str,
                 api_key: str = "none", role: str = "Assistant",
                 goal: str = "Answer the question briefly and correctly",
                 backstory: str = "You answer in one or two sentences.",
                 expected_output: str = "A short answer.", max_tokens: int = 128,
                 max_iter: int = 2, timeout_s: float = 600.0):
        self.python = Path(python).expanduser()
        if not self.python.is_file():
            raise ConfigError(f"no Python at {self.python}: make a CrewAI environment "
                              "(python -m venv crewai-venv && crewai-venv/bin/pip install "
                              "crewai) and pass its bin/python")
        self.request = {"base_url": base_url, "model": model, "api_key": api_key,
                        "role": role, "goal": goal, "backstory": backstory,
                        "expected_output": expected_output, "max_tokens": max_tokens,
                        "max_iter": max_iter}
        self.timeout_s = timeout_s

    def run(self, task: str, **options: Any) -> AgentResult:
        started = time.perf_counter()
        data = self._kickoff(task)
        latency_ms = elapsed_ms(started)
        usage = data.get("usage") or {}
        return AgentResult(
            answer=str(data.get("answer", "")).strip(), kind=self.kind,
            model=self.request["model"], backend="crewai", latency_ms=latency_ms,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            steps=[Step(kind="agent", name="crew kickoff", latency_ms=latency_ms,
                        detail={"requests": usage.get("successful_requests", 0)})])

    def _kickoff(self, task: str) -> dict[str, Any]:
        try:
            # dies with us, and a timeout stops the crew's whole process tree
            done = run_child([str(self.python), str(_RUNNER)],
                             input=json.dumps({**self.request, "task": task}),
                             timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            raise ServiceError(f"the crew did not finish within {self.timeout_s:g} s") from None
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            if "No module named 'crewai'" in done.stderr:
                last = f"CrewAI is not installed for {self.python}"
            raise ServiceError(f"the crew failed (exit {done.returncode}): {last[:300]}")
        try:
            return json.loads(done.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            raise ServiceError(f"the crew printed no result: {done.stdout[-200:]!r}") from None


__all__ = ["CrewAgent"]
