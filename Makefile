# The commands of the README: `make demo`, `make test` and `make lint`. Each builds .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## Runs a real sync session on the embedded default (SQLite store, Prefect ephemeral mode,
## a sample seq server it starts itself).
demo: $(STAMP)
	$(BIN)/syncflow demo

## Runs the whole test suite (needs the local PostgreSQL and MariaDB, started if down, and
## Debian's chromium for the browser test, installed if missing).
test: $(STAMP)
	bash scripts/ensure-services.sh
	bash scripts/ensure-browser.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## Style (ruff), the layers' import contracts (import-linter, [tool.importlinter]) and types
## (mypy, [tool.mypy]: strict on syncflow/store, sources, engine). See docs/architecture.md.
lint: $(STAMP)
	$(BIN)/ruff check syncflow flows tasks blocks deployments tests bench
	$(BIN)/ruff format --check syncflow flows tasks blocks deployments tests bench
	$(BIN)/lint-imports
	$(BIN)/mypy

bench: $(STAMP)
	bash scripts/ensure-services.sh
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .syncflow
