# Two commands do everything on a machine with only python3 and make:
#   make run   - set up, then run the whole pipeline (against the stand-in API without a token)
#   make test  - set up, then lint and run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# A DuckDB 1.x apart from the project's own: tests/test_serving_clients.py opens the serving copy
# with it, as the BI tools' bundled DuckDB would (docs/serving.md).
READER       := $(VENV)/duckdb1
READER_STAMP := $(READER)/.installed-stamp

.PHONY: install run test lint format bench bench-dbt bench-standin bench-definitions bench-nightly ui simulate endpoints clean

# dbt in an environment of its own inside .venv (dbt_project/requirements.txt says why), with the
# pipeline's DuckDB version: both write the warehouse file.
DBT_VENV  := $(VENV)/dbt
DBT_STAMP := $(DBT_VENV)/.installed-stamp

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@# An environment installed before dbt moved to .venv/dbt: dagster-dbt would go on importing
	@# the dbt-core left here in every load of the definitions.
	$(BIN)/python -m pip uninstall --quiet --yes dbt-core dbt-duckdb dagster-dlt 2>/dev/null || true
	touch $(STAMP)

$(DBT_STAMP): dbt_project/requirements.txt $(STAMP)
	test -x $(DBT_VENV)/bin/python || $(PYTHON) -m venv $(DBT_VENV)
	$(DBT_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(DBT_VENV)/bin/python -m pip install --quiet -r dbt_project/requirements.txt \
		"duckdb==$$($(BIN)/python -c 'from importlib.metadata import version; print(version("duckdb"))')"
	@# dbt's manifest, which the Dagster definitions read: parsed here once rather than in the
	@# first run (a run parses again only what changed since).
	$(BIN)/incomaker-elt transform --parse-only
	touch $(DBT_STAMP)

# Re-installed when its pin changes or the folder is gone; a new pyproject.toml leaves it be.
$(READER_STAMP): tests/duckdb1_reader.txt | $(STAMP)
	rm -rf $(READER)
	$(BIN)/python -m pip install --quiet --target $(READER) -r tests/duckdb1_reader.txt
	touch $(READER_STAMP)

install: $(STAMP) $(DBT_STAMP) $(READER_STAMP)

run: install
	$(BIN)/incomaker-elt run

test: install
	$(BIN)/ruff check .
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Benchmarks print figures; they take minutes and belong here, not in `make test`.
bench: install
	$(BIN)/python bench/ingest.py

bench-dbt: install
	$(BIN)/python bench/dbt_build.py

bench-standin: install
	$(BIN)/python bench/standin.py

bench-definitions: install  # the Dagster definitions' load, as a code server loads them (issue 12: 2 s)
	$(BIN)/python bench/definitions_load.py

# A first full load through the nightly job, then nightly runs 1 and 7 days later: requests, rows,
# time per stage, memory, each night as a share of the first load, and the marts checked against
# a fresh full load. `make bench-nightly SCALE=large` for the issue's target.
bench-nightly: install
	$(BIN)/python bench/nightly.py --scale $(or $(SCALE),medium)

test-lifecycle: install  # the lifecycle property, longer than in `make test` (bench/lifecycle.py)
	$(BIN)/python bench/lifecycle.py

# The Dagster UI on http://127.0.0.1:3000: `dagster dev` with DAGSTER_HOME=.dagster_home, the dbt
# manifest re-parsed on start; without INCOMAKER_API_TOKEN the stand-in API is started with it.
ui: install
	$(BIN)/incomaker-elt ui

simulate: install
	$(BIN)/incomaker-elt simulate

endpoints: install
	$(BIN)/incomaker-elt endpoints

clean:
	rm -rf $(VENV) warehouse .pytest_cache .ruff_cache dbt_project/target dbt_project/logs
