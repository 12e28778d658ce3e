# Two entry points: `make demo` (the main job on the built-in phantom) and
# `make test` (the test suite). Each creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo

.PHONY: demo test test-quick lint install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/advseg reproduce --preset quick --out $(DEMO_DIR) --workers 2

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile tests

# Everything but the tests marked slow (subprocesses, the notebook, multi-process runs, the
# smoke study): for the edit-test loop. CI and README run `make test`, which runs them all.
test-quick: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not slow" tests

lint: $(STAMP)
	$(BIN)/ruff check keras_advseg tests benchmarks
	$(BIN)/ruff format --check keras_advseg tests benchmarks

clean:
	rm -rf $(VENV) $(DEMO_DIR) mlflow.db mlruns .pytest_cache
