# One venv for every distribution (the core, the four plugins, the root's sandboxes and dev
# tools); every target installs what it needs first.
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: install demo stop test bench lint format docs
install: $(VENV)/.installed

# Python's default, whatever the machine's environment says: a module is compiled when it is
# first imported, and kept. (Compiling all 5,400 of the venv's at install took 14 of its 17 s;
# the tests import a fraction of them.)
unexport PYTHONDONTWRITEBYTECODE

# The core, the plugins that depend on it, then the root distribution that depends on all of
# them: all editable, in one run, which resolves the local names to these directories.
# uv installs what pip would: `make install` in a fresh venv took 27 s instead of pip's 74 s
# on 2 cores (with every module compiled), and every CI run installs. The venv keeps pip.
DISTRIBUTIONS := common tap-customwebshop target-chargebee tap-chargebee target-customwebshop
$(VENV)/.installed: pyproject.toml $(DISTRIBUTIONS:%=%/pyproject.toml)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet 'uv>=0.9'
	@# In a venv from before the split the root distribution owned the plugins' executables;
	@# upgrading it after the plugins are installed would delete them: remove it first.
	$(BIN)/uv pip uninstall --quiet --python $(BIN)/python webshop-chargebee-sync 2>/dev/null || true
	$(BIN)/uv pip install --quiet --python $(BIN)/python $(DISTRIBUTIONS:%=-e ./%) -e '.[dev]'
	touch $@

# Sandboxes, `meltano run sync` both ways, an edit made in Chargebee arriving in the webshop.
demo: install
	$(BIN)/python -m sync_sandbox.demo demo

stop: install
	$(BIN)/python -m sync_sandbox.demo stop

# Three workers on the machine's two cores: the tests that wait (latency, Retry-After, hangs)
# leave a core free; an idle worker takes tests queued for a busy one (a module's fixtures
# are set up once per worker that runs its tests).
test: install lint
	$(BIN)/pytest -q -n 3 --dist worksteal --durations=15

# Benchmarks print figures; they are not pass/fail tests.
bench: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/sync.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/volume.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/reads.py

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
