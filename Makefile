# The two commands: `make run` (the service on a local 4-shard cluster) and `make test`.
VENV ?= .venv
PYTHON ?= python3
# Quiet: no pip banners, and no setuptools warnings from the editable builds (PYTHONWARNINGS
# reaches the build backend's process).
PIP := PYTHONWARNINGS=ignore $(VENV)/bin/pip install -q --disable-pip-version-check
# pip's own note on a find-links directory of the machine's pip.conf that does not exist
# (it says nothing about this project), filtered; pip's exit status kept.
SHELL := /bin/bash
QUIET := 2>&1 | { grep -v 'is ignored: it is neither a file nor a directory' || true; }; exit $${PIPESTATUS[0]}
SERVE := $(VENV)/.installed-serve
DEVELOP := $(VENV)/.installed-develop

.PHONY: run test test-fast lint docs bench install develop clean
# What ruff reads; mypy reads the files pyproject.toml names.
LINTED := core coordinator shards shard_router ledger migrations launchers bench chaos client tests

# What serving needs: the package and its client; PostgreSQL's server binaries where missing.
$(SERVE): pyproject.toml client/pyproject.toml
	@echo "installing the service into $(VENV) (once; make test adds the test tools)"
	@$(PYTHON) -m venv $(VENV)
	@$(PIP) --upgrade pip $(QUIET)
	@$(PIP) -e ./client -e . $(QUIET)
	@bash tests/install-system-deps.sh serve
	@touch $@

# What tests and development add: the test tools, the docs site, ZooKeeper and Java, and
# Patroni (the HA shards), which runs as the postgres user under the system's Python 3 from
# a directory of its own packages (launchers/patroni.py).
$(DEVELOP): $(SERVE)
	$(PIP) -e ./client -e '.[test]' $(QUIET)
	$(PIP) --target $(VENV)/patroni 'patroni[zookeeper,psycopg3]>=4.0' $(QUIET)
	bash tests/install-system-deps.sh test
	touch $@

install: $(SERVE)
develop: $(DEVELOP)

run: $(SERVE)
	@$(VENV)/bin/wallet serve --local

# Everything CI runs: ruff (format and lint), mypy, the docs site built strict, then every
# test against real PostgreSQL, ZooKeeper and Patroni.
test: lint docs
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

# The database-free tier, about a minute: no server is started (a thousand simulator seeds among it).
test-fast: lint
	$(VENV)/bin/pytest -q -m "not cluster and not slow" $(PYTEST_ARGS)

lint: $(DEVELOP)
	$(VENV)/bin/ruff format --check --quiet $(LINTED)
	$(VENV)/bin/ruff check --quiet $(LINTED)
	$(VENV)/bin/mypy

# The docs site (mkdocs): a broken link or a page left out of the navigation fails it (not
# --quiet: it hides the warnings that --strict counts).
docs: $(DEVELOP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir $(VENV)/site

# The benchmark (several minutes): figures and ratios against pgbench measured in the same run.
bench: $(DEVELOP)
	$(PIP) -e '.[test,bench]'
	command -v wrk >/dev/null || (apt-get install -y -q wrk || echo "wrk missing: the REST point will be skipped")
	$(VENV)/bin/wallet bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
