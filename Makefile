# imuflow: `make up` runs the whole stack locally, `make test` runs the test suite.
# Needs Python 3.11+ (python3) and make; everything else goes into ./.venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Reinstall only when pyproject.toml changed since the last install.
STAMP := $(VENV)/.installed
# Two workers (pytest-xdist): most tests wait on brokers, group joins and parses rather
# than burn CPU, so two at a time roughly halve the run on 2 cores. Each worker has its
# own broker, template database and free ports. The few tests that keep both cores busy
# for a minute or more are marked xdist_group("cpu") and run one after the other on one
# worker (two of them side by side doubled each other's time past their bounds).
# `make test PYTEST_ARGS=` runs serially.
PYTEST_ARGS ?= -n 2 --dist loadgroup --durations=25

.PHONY: venv up test lint bench eta-eval

venv: $(STAMP)

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "imuflow needs Python 3.11+ (found $$($(PYTHON) --version))" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

up: venv
	$(BIN)/imuflow up

# pytest exits 5 when it collected nothing: a broken suite, never a pass.
test: venv
	@$(BIN)/pytest $(PYTEST_ARGS); rc=$$?; \
		if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; fi; exit $$rc

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Speed benchmarks (~5 min; tables printed and written to docs/benchmarks.md).
bench: venv
	$(BIN)/python -m benchmarks.run_all

# ETA accuracy on the recorded traces (benchmarks/eta/traces); rewrites the table in docs/eta.md.
eta-eval: venv
	$(BIN)/python -m benchmarks.eta_harness
