# Boxoffice: every target installs what it needs into .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# PORT is passed on only when given (make run PORT=8080); otherwise .env or 4521 applies.
PORT   ?=
PORT_FLAG = $(if $(PORT),--port $(PORT))
URL_FLAG  = $(if $(PORT),--url http://127.0.0.1:$(PORT))

.PHONY: run test lint format simulate migrate bench onsale clean test-tools failover-tools failover-demo test-failover

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Runtime dependencies only (make run).
$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# Runtime plus test and lint tools (make test).
$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.runtime

run: $(VENV)/.runtime ## migrate the database, print the first admin key once, then serve on PORT (SQLite ./boxoffice.db unless DATABASE_URL)
	$(BIN)/boxoffice db upgrade
	$(BIN)/boxoffice keys bootstrap
	exec $(BIN)/boxoffice serve $(PORT_FLAG)

migrate: $(VENV)/.runtime
	$(BIN)/boxoffice db upgrade

test: $(VENV)/.dev lint test-tools ## lint, then the whole suite on SQLite and a throwaway PostgreSQL
	$(BIN)/python -m pytest

# From Debian's packages if missing: curl (the README test runs its examples as written),
# redis-server (the shared rate-limit tests start their own on a free port),
# pg_auto_failover (tests/e2e/test_failover.py: pg_autoctl and the monitor's extension),
# pgbouncer (tests/e2e/test_pgbouncer.py starts its own in front of the throwaway PostgreSQL),
# wrk (tests/e2e/test_onsale.py, the small on-sale benchmark) and
# prometheus (its promtool checks and unit-tests deploy/prometheus/alerts.yml).
FAILOVER_PACKAGES = $(if $(and $(wildcard /usr/bin/pg_autoctl),$(wildcard /usr/lib/postgresql/15/lib/pgautofailover.so)),,postgresql-15-auto-failover)
TEST_PACKAGES = $(if $(shell command -v curl),,curl) $(if $(shell command -v wrk),,wrk) $(if $(wildcard /usr/bin/redis-server),,redis-server) $(FAILOVER_PACKAGES) \
	$(if $(wildcard /usr/sbin/pgbouncer),,pgbouncer) $(if $(wildcard /usr/bin/promtool),,prometheus)
test-tools:
	@if [ -n "$(strip $(TEST_PACKAGES))" ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(TEST_PACKAGES); \
	fi

failover-tools:
	@if [ -n "$(strip $(FAILOVER_PACKAGES))" ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(FAILOVER_PACKAGES); \
	fi

test-failover: $(VENV)/.dev failover-tools ## the failover test alone (make test runs it too)
	$(BIN)/python -m pytest tests/e2e/test_failover.py

failover-demo: $(VENV)/.dev failover-tools ## the same on a monitor, a primary and a synchronous secondary, with the figures printed
	$(BIN)/python -m bench.failover_demo $(FAILOVER_ARGS)

lint: $(VENV)/.dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

format: $(VENV)/.dev
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

# Dev tools plus matplotlib and py-spy (make bench).
$(VENV)/.bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@ $(VENV)/.dev $(VENV)/.runtime

BENCH_ARGS ?=
bench: $(VENV)/.bench ## flash-sale benchmark on PostgreSQL and SQLite; results in bench/results and docs/performance.md
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# wrk comes from Debian's packages when missing (bench/run.py's ensure_wrk).
ONSALE_ARGS ?=
onsale: $(VENV)/.bench ## the million-attempt sale (issue 12) on PostgreSQL, with and without the waiting room; results in bench/results/onsale.*
	$(BIN)/python -m bench.onsale $(ONSALE_ARGS)

polls: $(VENV)/.bench ## what a poll costs, answered by the server's protocol and by the app, side by side; results in bench/results/polls.md
	$(BIN)/python -m bench.polls

simulate: $(VENV)/.runtime ## the original concurrency script, against a running server (key in BOXOFFICE_API_KEY)
	$(BIN)/boxoffice simulate $(URL_FLAG)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
