"""Multi-agent over NATS: a coordinator plans, a pool of workers answers, a reporter merges.

- :class:`MultiAgent` (``kind="multi"``): plugs into the app and the evals like any agent;
- :class:`Worker`: wraps any agent; ``agentcycle multi worker --agent module:function``
  runs one as a process;
- :func:`split_questions` (default planner), :class:`LLMPlanner` (through the router);
- :func:`merge_results` (default reporter); :class:`QueueConfig` (subjects, redelivery).
"""

from agentcycle.agents.multi.background import run_workers
from agentcycle.agents.multi.coordinator import MultiAgent, publish_tasks
from agentcycle.agents.multi.planner import LLMPlanner, Planner, split_questions
from agentcycle.agents.multi.protocol import QueueConfig, Task, ensure_queue, new_job_id
from agentcycle.agents.multi.reporter import Reporter, merge_results
from agentcycle.agents.multi.worker import Worker

__all__ = ["LLMPlanner", "MultiAgent", "Planner", "QueueConfig", "Reporter", "Task", "Worker",
           "ensure_queue", "merge_results", "new_job_id", "publish_tasks",
           "run_workers", "split_questions"]
