# Sluice: `make run` serves the API on the local stack, `make test` runs every test.
# Both create the virtualenv, install dependencies and start what is missing of the
# stack (Postgres, Redis, Kafka; ClickHouse is embedded) under .services/.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STACK := $(PY) -m storage.local_stack
PYTEST_ARGS ?=

.PHONY: run test up down status env venv bench bench-asgi clean

$(VENV)/.installed: pyproject.toml
	@echo "[make] creating the virtualenv in $(VENV) and installing dependencies (first run takes a few minutes)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip
	@$(PY) -m pip install --progress-bar on -e '.[dev]'
	@touch $@

venv: $(VENV)/.installed

run: venv
	@$(STACK) run -- sh -c '$(PY) -m app migrate && exec $(PY) -m app serve'

test: venv
	@$(STACK) run -- $(PY) -m pytest $(PYTEST_ARGS)

up: venv
	@$(STACK) up

down: venv
	@$(STACK) down

status: venv
	@$(STACK) status

env: venv
	@$(STACK) env

bench: venv
	@command -v wrk >/dev/null || (echo "[make] installing wrk (apt-get)"; apt-get install -y -qq wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk))
	@$(STACK) run -- $(PY) bench/workspace_get.py $(if $(QUICK),--quick,)

bench-asgi: venv
	@$(PY) bench/asgi_servers.py $(if $(QUICK),--quick,)

clean: down
	rm -rf .services $(VENV)
