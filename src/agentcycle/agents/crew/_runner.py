"""Run one CrewAI crew on a task: JSON on stdin, JSON on stdout.

Executed by the Python of CrewAI's own environment (CrewAI's pins, e.g. ``openai<3``,
conflict with agentcycle's), so it imports only CrewAI and the standard library.
"""

import json
import os
import sys

os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")  # offline: no phoning home
os.environ.setdefault("CREWAI_TRACING_ENABLED", "false")
os.environ.setdefault("OTEL_SDK_DISABLED", "true")


def main() -> None:
    from crewai import LLM, Agent, Crew, Task

    request = json.loads(sys.stdin.read())
    llm = LLM(model=f"openai/{request['model']}", base_url=request["base_url"],
              api_key=request["api_key"], max_tokens=request["max_tokens"], temperature=0)
    agent = Agent(role=request["role"], goal=request["goal"], backstory=request["backstory"],
                  llm=llm, allow_delegation=False, max_iter=request["max_iter"],
                  verbose=False)
    task = Task(description=request["task"], expected_output=request["expected_output"],
                agent=agent)
    crew = Crew(agents=[agent], tasks=[task], verbose=False)
    output = crew.kickoff()
    usage = getattr(crew, "usage_metrics", None)
    print(json.dumps({"answer": str(output), "usage": usage.model_dump() if usage else {}}))


if __name__ == "__main__":
    main()
