"""The agent of this project: ``agent.build_agent(settings, options)`` builds it."""
