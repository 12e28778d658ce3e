# Two entry points: `make demo` (the main job on the built-in phantom) and
# `make test` (the test suite). Each creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo

.PHONY: demo test test-quick test-trained lint docs docs-serve install clean

# uv installs the same releases as pip (same resolution of pyproject.toml) in a fifth of the
# time (docs/benchmarks.md, "Installing"); pip does it where uv cannot be installed or fails.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	( $(BIN)/python -m pip install --quiet uv && \
	  $(BIN)/python -m uv pip install --quiet --python $(BIN)/python -e ".[dev]" ) || \
	( $(BIN)/python -m pip install --quiet --upgrade pip && \
	  $(BIN)/python -m pip install --quiet -e ".[dev]" )
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/advseg reproduce --preset quick --out $(DEMO_DIR) --workers 2

# The tests that judge a network trained in the suite run under two fixture seeds
# (tests/conftest.py, FIXTURE_SEEDS): no expectation may rest on one machine's weights.
# The longest files start first (--no-loadscope-reorder keeps conftest's order).
# --durations=20 prints the slowest tests: docs/benchmarks.md records the suite's time.
PYTEST := $(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder
test: $(STAMP)
	$(PYTEST) --durations=20 tests

# For the edit-test loop: everything but the tests marked slow (subprocesses, the notebook,
# multi-process runs, the smoke study, whole trainings) and the tests of the network trained in
# the suite (marked trained: `make test-trained` runs those under fixture seed 1). CI and README
# run `make test`, which runs them all.
test-quick: $(STAMP)
	ADVSEG_FIXTURE_SEEDS=1 $(PYTEST) -m "not slow and not trained" tests

test-trained: $(STAMP)
	ADVSEG_FIXTURE_SEEDS=1 $(PYTEST) -m "trained and not slow" tests

# The documentation site (mkdocs-material; the API and CLI pages are generated from the code).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-serve: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:8000

lint: $(STAMP)
	$(BIN)/ruff check keras_advseg tests benchmarks docs/hooks
	$(BIN)/ruff format --check keras_advseg tests benchmarks docs/hooks

clean:
	rm -rf $(VENV) $(DEMO_DIR) mlflow.db mlruns .pytest_cache site
