# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DAGSTER_HOME ?= $(CURDIR)/data/dagster_home
PORT ?= 3000
# pytest-xdist: the suite on this many worker processes, each test file on one worker (its
# module-scoped servers start once); `make test PYTEST_WORKERS=0` runs it in one process.
PYTEST_WORKERS ?= 2
PYTEST_PARALLEL := -n $(PYTEST_WORKERS) --dist loadfile

.PHONY: setup lock demo test reliability servers dev lint bench bench-delivery bench-scale bench-identity clean

setup: $(STAMP)

# uv installs the exact versions of uv.lock in seconds; it comes from the package index into a
# tool environment of its own (`make UV=uv` uses one already on PATH). Plain pip still works:
# `pip install -e '.[dev]'` resolves the ranges of pyproject.toml instead of the lock.
UV ?= .uv/bin/uv
UV_TOOL := $(filter .uv/bin/uv,$(UV))

.uv/bin/uv:
	$(PYTHON) -m venv .uv
	.uv/bin/pip install --quiet 'uv>=0.13,<0.14'

# --compile-bytecode: the installed packages' .pyc files are written once, here. Without them
# (uv writes none by default, and PYTHONDONTWRITEBYTECODE=1 stops Python writing them) every
# process that loads the code location (each run, code server, daemon, CLI command) compiles
# Dagster's ~2,500 modules from source again: about 2 CPU s each. Compiling takes 18-21 s, once.
# The Makefile is a prerequisite too: a virtualenv made before a change to this rule is synced
# again (an older one held no bytecode).
$(STAMP): pyproject.toml uv.lock Makefile | $(UV_TOOL)
	$(UV) sync --frozen --extra dev --compile-bytecode --python $(PYTHON)
	touch $(STAMP)

lock: | $(UV_TOOL)  ## re-resolve uv.lock after a change to pyproject.toml's dependencies
	$(UV) lock

demo: setup  ## generate the demo's files and run the whole workflow on DuckDB
	$(BIN)/python -m orchestration demo

servers:  ## the test servers' programs (OpenSSH, Samba, GnuPG, unzip, Chromium); PostgreSQL (127.0.0.1:5432, with initdb for throwaway servers) and Redis (6379) are expected running
	@bash scripts/install-test-servers.sh

test: setup servers  ## the lock matches pyproject.toml, ruff, pyright over the package, then every test against real servers on loopback
	$(UV) lock --check
	$(BIN)/ruff check .
	@# pyright (about a minute of CPU) runs beside the tests, which mostly wait on servers;
	@# its report follows theirs and either failing fails the target.
	@log=$$(mktemp); $(BIN)/pyright --pythonpath $(BIN)/python >$$log 2>&1 & types=$$!; \
	$(BIN)/pytest $(PYTEST_PARALLEL); tests=$$?; \
	wait $$types; typed=$$?; echo "--- pyright:"; cat $$log; rm -f $$log; \
	exit $$((tests || typed))

reliability: setup servers  ## the reliability/security suite (markers fault, bad_input, security) and its figures
	$(BIN)/pytest $(PYTEST_PARALLEL) -m "fault or bad_input or security"

dev: setup  ## the Dagster UI on http://127.0.0.1:$(PORT) (`make dev PORT=3001`); prints what it starts
	@mkdir -p $(DAGSTER_HOME)
	@if [ -f $(DAGSTER_HOME)/dagster.yaml ]; then \
	  echo "instance config: $(DAGSTER_HOME)/dagster.yaml (kept; the shipped one is deploy/dagster.yaml)"; \
	else cp deploy/dagster.yaml $(DAGSTER_HOME)/dagster.yaml && \
	  echo "instance config: deploy/dagster.yaml copied to $(DAGSTER_HOME)/dagster.yaml"; fi
	@$(BIN)/python -m orchestration jobs
	@echo "Starting the Dagster UI and daemon on http://127.0.0.1:$(PORT) (DAGSTER_HOME=$(DAGSTER_HOME)); launch with STAGECOACH_DAGSTER_URL=http://127.0.0.1:$(PORT)"
	STAGECOACH_DAGSTER_URL=http://127.0.0.1:$(PORT) $(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p $(PORT)

bench: setup  ## ingest benchmark (2 GB CSV): Stagecoach vs DuckDB's own read_csv
	$(BIN)/python benchmarks/ingest.py

bench-delivery: setup servers  ## 1 GiB over SFTP vs OpenSSH's sftp; sealing vs gpg+zip+md5sum
	$(BIN)/python benchmarks/sftp_delivery.py
	$(BIN)/python benchmarks/sealing.py

bench-scale: setup  ## 1,000 couriers + 1,000 activations: load vs hand-written Definitions; one missing-files tick over 10,000 files
	@$(BIN)/python benchmarks/definitions_load.py; load=$$?; \
	$(BIN)/python benchmarks/missing_files_tick.py; tick=$$?; \
	exit $$((load || tick))  # both run; a missed target fails the target

bench-identity: setup  ## identity resolution: quality vs known truth (200,000 people), id stability, 1,000,000 records beside splink's example
	nice -n 10 $(BIN)/python benchmarks/identity.py

clean:
	rm -rf data .pytest_cache
