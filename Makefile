# Entry points. Each target builds the virtual environment first when it is missing or
# older than pyproject.toml, so on a fresh machine `make run` / `make test` is all it takes.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
export RAY_USAGE_STATS_ENABLED := 0
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: run ui servers-up servers-down test test-slow test-all test-infra lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

run: $(VENV)/.installed  ## the main job: the wgan_clip sweep on the embedded defaults
	$(PY) sweeps/wgan_clip.py $(ARGS)

ui: $(VENV)/.installed  ## the MLflow UI over the default local store, on 127.0.0.1 only
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

servers-up: $(VENV)/.installed  ## a local MLflow server and Ray head on 127.0.0.1 (state in .run/)
	infra/local/mlflow-server.sh start
	infra/local/ray-head.sh start

servers-down:
	-infra/local/ray-head.sh stop
	-infra/local/mlflow-server.sh stop

test: $(VENV)/.installed  ## the default test run (slow tests excluded)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: $(VENV)/.installed  ## the slow tests: faults, resume, worker loss, tracking outage, the browser
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

test-all: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS)

test-infra: $(VENV)/.installed  ## launcher / manifest / image checks, local servers, fake autoscaling cluster
	$(PY) -m pytest tests/test_infra_configs.py tests/test_infra_local_scripts.py tests/test_infra_autoscaling.py \
		tests/test_e2e_job.py $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check ganlib sweeps tests bench infra

clean:
	rm -rf $(VENV) .pytest_cache

bench: $(VENV)/.installed  ## benchmarks: ratios measured side by side (figures in docs/benchmarks.md)
	$(PY) bench/eval_cost.py
	$(PY) bench/trainer_step.py
	$(PY) bench/cohort_throughput.py
