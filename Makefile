# Sluice: `make run` serves the API on the local stack, `make test` runs every test.
# Both create the virtualenv, install dependencies and start what is missing of the
# stack (Postgres, Redis, Kafka; ClickHouse is embedded) under .services/.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STACK := $(PY) -m storage.local_stack
PYTEST_ARGS ?=

.PHONY: run test test-fast contract lint typecheck check up down status stack-status env venv bench bench-tools bench-check bench-asgi clean

$(VENV)/.installed: pyproject.toml
	@echo "[make] creating the virtualenv in $(VENV) and installing dependencies (first run takes a few minutes)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip
	@$(PY) -m pip install --progress-bar on -e '.[dev]'
	@touch $@

venv: $(VENV)/.installed

run: venv
	@$(STACK) run -- $(PY) -m app run

test: venv
	@$(STACK) run -- $(PY) -m pytest $(PYTEST_ARGS)

# The in-process half (tests/unit: no Postgres, Redis or Kafka needed), in well under a minute.
# `make test` still runs everything: tests/unit, tests/integration (each real service on its own)
# and tests/e2e (HTTP against the real API and pipeline).
test-fast: venv
	@$(PY) -m pytest tests/unit -q $(PYTEST_ARGS)

# The API contract alone (tests/e2e/test_contract.py, also part of `make test`): schemathesis
# attacks every operation of /openapi.json with every check and phase on a server of its own, with
# a new seed each time (CI uses a fixed one), and a client generated from the document drives README's walk-through.
contract: venv
	@$(STACK) run -- env SLUICE_CONTRACT_SEED=$${SLUICE_CONTRACT_SEED:-random} $(PY) -m pytest tests/e2e/test_contract.py -v $(PYTEST_ARGS)

# What .ci/run checks before the tests: ruff (lint and formatting) and mypy, configured in
# pyproject.toml; each must report nothing. `ruff format .` and `ruff check --fix .` fix most of it.
lint: venv
	@echo "[make] ruff check and ruff format --check"
	@$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

typecheck: venv
	@echo "[make] mypy (app, ingest, storage)"
	@$(VENV)/bin/mypy

check: lint typecheck test

up: venv
	@$(STACK) up

down: venv
	@$(STACK) down

# What runs: the stack's services, then Sluice's own processes and how they do (`python -m app
# status`: API, worker, dispatcher, consumer lag, spool, webhooks; exit 1 when anything is wrong).
# Starts nothing. The stack's part alone: `make stack-status`.
status: venv
	@$(STACK) status
	@echo
	@eval "$$($(STACK) env)" && $(PY) -m app status

stack-status: venv
	@$(STACK) status

env: venv
	@$(STACK) env

# The benchmark suite (bench/suite.py): every benchmark in sequence under one `run`, one results
# file bench/results/<date>-<host>.json, one table, charts. QUICK=1: the short version (~4 min).
# Installs what it needs on first use: wrk (apt-get), matplotlib (pip), vegeta (go install).
bench-tools: venv
	@command -v wrk >/dev/null || (echo "[make] installing wrk (apt-get)"; apt-get install -y -qq wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk))
	@$(PY) -c 'import matplotlib' 2>/dev/null || (echo "[make] installing matplotlib for the charts"; $(PY) -m pip install --quiet -e '.[dev,bench]')

bench: bench-tools
	@$(STACK) run -- $(PY) bench/suite.py $(if $(QUICK),--quick,)

# For humans, not CI: run the suite, then flag any figure more than 20% worse than the committed
# results (timed assertions in CI would be flaky on shared machines). Without re-running:
# .venv/bin/python bench/report.py --check
bench-check: bench-tools
	@$(STACK) run -- $(PY) bench/suite.py $(if $(QUICK),--quick,); s=$$?; [ $$s -le 1 ] || exit $$s
	@$(PY) bench/report.py --check

bench-asgi: venv
	@$(PY) bench/asgi_servers.py $(if $(QUICK),--quick,)

clean: down
	rm -rf .services $(VENV)
