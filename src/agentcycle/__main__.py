from agentcycle.cli.main import main

main()
