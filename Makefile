# The territorial platform: `make run` starts everything, `make test` runs the whole suite.
# Only python3 (3.11+) and make are needed: the rest is installed here from the lock file.

PYTHON ?= python3
TOOLS  := .tools
UV     := $(TOOLS)/bin/uv
VENV   := .venv
PY     := $(VENV)/bin/python
UV_VERSION := 0.13.8
PYTEST_WORKERS ?= 2

.PHONY: help install run check-run test test-fast lint format events-doc bench clean-data clean

help:
	@echo "make run         start PostgreSQL, NATS, the four services and the gateway (Ctrl-C stops)"
	@echo "make test        run the whole test suite on throwaway real servers"
	@echo "make lint        ruff, mypy and the import-linter contracts"
	@echo "make bench       run the benchmarks of bench/ (figures beside their targets)"
	@echo "make clean-data  remove the data kept by make run (.data/)"

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.installed: $(UV) uv.lock pyproject.toml shared/pyproject.toml gateway/pyproject.toml services/*/pyproject.toml
	UV_PYTHON=$(PYTHON) $(UV) sync --frozen --all-packages --quiet
	@touch $@

install: $(VENV)/.installed

run: install
	$(PY) deploy/local/run.py

check-run: install
	$(PY) deploy/local/run.py --check

test: install
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup

test-fast: install
	$(PY) -m pytest -x -q -m "not reliability and not e2e"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy shared/src services/*/src gateway/src
	$(VENV)/bin/lint-imports

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

events-doc: install
	$(PY) -m ght_shared.payloads.catalogue --write docs/events.md

bench: install
	$(PY) bench/run_all.py

clean-data:
	rm -rf .data

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache
