# One venv for the whole distribution; every target installs what it needs first.
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: install demo stop test bench lint format docs
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# Sandboxes, `meltano run sync` both ways, an edit made in Chargebee arriving in the webshop.
demo: install
	$(BIN)/python -m sync_sandbox.demo demo

stop: install
	$(BIN)/python -m sync_sandbox.demo stop

# Two workers (the machine's two cores); a file's tests stay together (module fixtures).
test: install lint
	$(BIN)/pytest -q -n 2 --dist loadfile --durations=15

# Benchmarks print figures; they are not pass/fail tests.
bench: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/sync.py

# docs/dataflow.md from meltano.yml's maps, and each plugin README's `--about` settings;
# tests/test_operator.py fails when the committed files differ from what this writes.
docs: install
	$(BIN)/sync-docs

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
