# Sluice: `make run` serves the API on the local stack, `make test` runs every test.
# Both create the virtualenv, install dependencies and start what is missing of the
# stack (Postgres, Redis, Kafka; ClickHouse is embedded) under .services/.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STACK := $(PY) -m storage.local_stack
PYTEST_ARGS ?=

.PHONY: run test up down status env venv bench bench-check bench-asgi clean

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

up: venv
	@$(STACK) up

down: venv
	@$(STACK) down

status: venv
	@$(STACK) status

env: venv
	@$(STACK) env

# The benchmarks that need the stack, run one after the other under one `run`; each writes
# bench/results/. Ctrl-C stops the sequence; a failed one does not, but makes `make` fail.
BENCHES := redis_scripts workspace_get pixel_e2e consumer webhooks

bench: venv
	@command -v wrk >/dev/null || (echo "[make] installing wrk (apt-get)"; apt-get install -y -qq wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk))
	@$(PY) -c 'import matplotlib' 2>/dev/null || (echo "[make] installing matplotlib for the charts"; $(PY) -m pip install --quiet -e '.[dev,bench]')
	@$(STACK) run -- sh -c 'rc=0; for b in $(BENCHES); do echo "[make] bench/$$b.py $(if $(QUICK),--quick,)"; $(PY) bench/$$b.py $(if $(QUICK),--quick,); s=$$?; [ $$s -ge 128 ] && exit $$s; [ $$s -ne 0 ] && rc=$$s; echo; done; exit $$rc'
	@echo "[make] all results, newest per benchmark (charts in bench/results/*.png):"
	@$(PY) bench/report.py --charts

# For humans, not CI: run the benchmarks, then flag any ratio more than 20% below the
# committed results (timed assertions in CI would be flaky on shared machines).
bench-check: bench
	@$(PY) bench/report.py --check

bench-asgi: venv
	@$(PY) bench/asgi_servers.py $(if $(QUICK),--quick,)

clean: down
	rm -rf .services $(VENV)
