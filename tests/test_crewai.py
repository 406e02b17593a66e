"""A CrewAI crew, in CrewAI's own environment (`make crewai-venv`), answering through our
local model server by base_url, alone and as one of the NATS workers."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentcycle.errors import ConfigError, ServiceError

REPO = Path(__file__).resolve().parent.parent
CREWAI_PYTHON = REPO / ".venv-crewai" / "bin" / "python"

needs_crewai = pytest.mark.skipif(
    not (CREWAI_PYTHON.parent / "crewai-ok").is_file(),  # written once crewai installed
    reason="no CrewAI environment: run `make crewai-venv` (CI builds it)")


def test_a_missing_environment_is_one_clear_error(tmp_path):
    from agentcycle.agents.crew import CrewAgent

    with pytest.raises(ConfigError, match="no Python at"):
        CrewAgent(tmp_path / "nope" / "python", base_url="http://x", model="m")


def test_python_without_crewai_is_one_clear_error():
    import sys

    from agentcycle.agents.crew import CrewAgent

    agent = CrewAgent(sys.executable, base_url="http://127.0.0.1:9/v1", model="m")
    with pytest.raises(ServiceError, match="CrewAI is not installed"):
        agent.run("q")


@pytest.fixture
def crew(base_server):
    from agentcycle.agents.crew import CrewAgent

    return CrewAgent(CREWAI_PYTHON, base_url=base_server.base_url, model="base",
                     api_key="test-key", role="Tenancy law assistant", max_tokens=24)


@pytest.mark.slow
@needs_crewai
def test_a_crew_answers_through_our_local_server(crew):
    result = crew.run("How long does a landlord have to return the deposit?")
    assert result.kind == "crewai" and result.answer
    assert result.completion_tokens > 0 and result.steps[0].detail["requests"] >= 1


@pytest.mark.slow
@needs_crewai
def test_a_crew_takes_part_as_one_of_the_nats_workers(crew, settings):
    from agentcycle.agents.multi import MultiAgent, run_workers
    from agentcycle.messaging import nats_session

    with nats_session(settings) as url, run_workers([crew], url):
        result = MultiAgent(settings, url=url, mode="request", timeout=600).run(
            "How long does a landlord have to return the deposit?")
    assert result.status == "completed" and result.kind == "multi"
    assert result.completion_tokens > 0 and result.answer
