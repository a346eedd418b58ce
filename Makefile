# The two commands a newcomer needs: `make run` and `make test`.
# The first interpreter that really runs and is 3.11 or 3.12 (pyenv shims may exist but fail).
PYTHON ?= $(shell for c in python3.12 python3.11 python3; do \
	$$c -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] <= (3, 12) else 1)' 2>/dev/null && { command -v $$c; break; }; \
	done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export AUTHZ_DATABASE_URL ?= sqlite:///var/authz.sqlite3

.PHONY: run test lint install demo bench soak clean

$(STAMP): pyproject.toml constraints.txt
	@test -n "$(PYTHON)" || { echo "Python 3.11 or 3.12 is needed (oso 0.27.3 has no wheels for others); set PYTHON=/path/to/python3.12"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## make run: install, create the SQLite database, load the demo, print an API key, serve.
run: $(STAMP)
	$(BIN)/authz db upgrade
	$(BIN)/authz demo
	@echo "Admin API key (use it as 'Authorization: Bearer <key>'):"
	@$(BIN)/authz keys create --role admin --name "demo-admin-$$(date +%s)" 2>/dev/null | tail -n 1
	$(BIN)/authz serve

## make test: install and run the whole suite (PostgreSQL too when AUTHZ_TEST_POSTGRES_URL is set).
test: $(STAMP)
	$(BIN)/python -m pytest

## make bench: the benchmark (BENCHMARKS.md); BENCH_ARGS="--quick" or "--size medium --db sqlite" etc.
## make lint: ruff (style and bugs) and mypy (types), configured in pyproject.toml.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(STAMP)
	@command -v wrk >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		{ apt-get install -y -qq wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }; }; } || \
		echo "wrk is not installed: the benchmark falls back to its Python load generator"
	$(BIN)/python -m bench $(BENCH_ARGS)

## make soak: 10 minutes of mixed reads and writes through authz serve (RELIABILITY.md); SOAK_ARGS="--db sqlite" etc.
soak: $(STAMP)
	$(BIN)/python -m tests.reliability.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis
