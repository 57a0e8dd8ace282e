# Quick start: `make demo` (toy pipeline on CPU) and `make test` (the test suite).
# Both create the virtual environment on first use and reinstall the package when pyproject.toml changes.
# The environment is .venv in the clone (git-ignored), the one README's "Install" describes;
# `make VENV=/path/to/env test` puts it (or finds an existing one) elsewhere.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.weclip-installed

.PHONY: install test demo lint

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest -q

demo: install
	$(PY) tools/demo.py

lint: install
	$(PY) -m ruff check weclip tools tests benchmarks
