# The two commands: `make run` (service on a local 4-shard cluster) and `make test`.
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed

.PHONY: run test bench install system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# PostgreSQL server binaries (and, later, ZooKeeper) where missing.
system-deps:
	bash tests/install-system-deps.sh

run: install system-deps
	$(VENV)/bin/wallet serve --local

test: install system-deps
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

# The benchmark (several minutes): figures and ratios against pgbench measured in the same run.
bench: install system-deps
	$(VENV)/bin/pip install -q -e '.[test,bench]'
	command -v wrk >/dev/null || (apt-get install -y -q wrk || echo "wrk missing: the REST point will be skipped")
	$(VENV)/bin/wallet bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
