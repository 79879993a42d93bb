# Entry points. Each target builds the virtual environment first when it is missing or
# older than pyproject.toml, so on a fresh machine `make run` / `make test` is all it takes.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
export RAY_USAGE_STATS_ENABLED := 0
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: run test test-all lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

run: $(VENV)/.installed  ## the main job
	$(PY) -m ganlib.train --dataset ring8 --loss wgan_gp

test: $(VENV)/.installed  ## the default test run (slow tests excluded)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-all: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check ganlib sweeps tests bench

clean:
	rm -rf $(VENV) .pytest_cache
