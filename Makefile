# The two commands: `make run` (service on a local 4-shard cluster) and `make test`.
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed

.PHONY: run test test-fast lint bench install system-deps clean
# What ruff reads; mypy reads the files pyproject.toml names.
LINTED := core coordinator shards shard_router ledger migrations launchers bench chaos client tests

$(STAMP): pyproject.toml client/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e ./client -e '.[test]'
	# Patroni (the HA shards) runs as the postgres user under the system's Python 3, from a
	# directory of its own packages (launchers/patroni.py).
	$(VENV)/bin/pip install -q --target $(VENV)/patroni 'patroni[zookeeper,psycopg3]>=4.0'
	touch $(STAMP)

install: $(STAMP)

# PostgreSQL server binaries (and, later, ZooKeeper) where missing.
system-deps:
	bash tests/install-system-deps.sh

run: install system-deps
	$(VENV)/bin/wallet serve --local

# Everything CI runs: ruff (format and lint), mypy, then every test against real PostgreSQL and ZooKeeper.
test: lint system-deps
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

# The database-free tier, in seconds: no server is started.
test-fast: lint
	$(VENV)/bin/pytest -q -m "not cluster" $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff format --check --quiet $(LINTED)
	$(VENV)/bin/ruff check --quiet $(LINTED)
	$(VENV)/bin/mypy

# The benchmark (several minutes): figures and ratios against pgbench measured in the same run.
bench: install system-deps
	$(VENV)/bin/pip install -q -e '.[test,bench]'
	command -v wrk >/dev/null || (apt-get install -y -q wrk || echo "wrk missing: the REST point will be skipped")
	$(VENV)/bin/wallet bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
