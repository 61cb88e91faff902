# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DAGSTER_HOME ?= $(CURDIR)/data/dagster_home

.PHONY: setup demo test reliability servers dev lint bench bench-delivery bench-scale clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: setup  ## generate the demo's files and run the whole workflow on DuckDB
	$(BIN)/python -m orchestration demo

servers:  ## the test servers' programs (OpenSSH, Samba, GnuPG, unzip, Chromium); PostgreSQL (127.0.0.1:5432, with initdb for throwaway servers) and Redis (6379) are expected running
	@bash scripts/install-test-servers.sh

test: setup servers  ## every test, against real servers on loopback
	$(BIN)/ruff check .
	$(BIN)/pytest

reliability: setup servers  ## the reliability/security suite (markers fault, bad_input, security) and its figures
	$(BIN)/pytest -m "fault or bad_input or security"

dev: setup  ## the Dagster UI on http://127.0.0.1:3000
	mkdir -p $(DAGSTER_HOME) && cp -n deploy/dagster.yaml $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

bench: setup  ## ingest benchmark (2 GB CSV): Stagecoach vs DuckDB's own read_csv
	$(BIN)/python benchmarks/ingest.py

bench-delivery: setup servers  ## 1 GiB over SFTP vs OpenSSH's sftp; sealing vs gpg+zip+md5sum
	$(BIN)/python benchmarks/sftp_delivery.py
	$(BIN)/python benchmarks/sealing.py

bench-scale: setup  ## 1,000 couriers + 1,000 activations: load vs hand-written Definitions; one missing-files tick over 10,000 files
	@$(BIN)/python benchmarks/definitions_load.py; load=$$?; \
	$(BIN)/python benchmarks/missing_files_tick.py; tick=$$?; \
	exit $$((load || tick))  # both run; a missed target fails the target

clean:
	rm -rf data .pytest_cache
