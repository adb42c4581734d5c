# The commands a newcomer and CI run: `make demo` and `make test`.
PY := .venv/bin/python

.PHONY: setup demo test test-fast lint format pytest bench bench-smoke faults

setup:
	@scripts/setup

demo: setup
	@$(PY) scripts/demo.py

test: setup lint pytest

lint:
	$(PY) -m ruff check hopcast tests bench scripts
	$(PY) -m ruff format --check hopcast tests bench scripts
	$(PY) -m mypy
	.venv/bin/lint-imports

format: setup
	$(PY) -m ruff format hopcast tests bench scripts
	$(PY) -m ruff check --fix hopcast tests bench scripts

pytest:
	$(PY) -m pytest -q

# The inner loop, under a minute: the lint's quickest part and the tests that restart no
# RabbitMQ, start no cluster or browser, take no more than a second or two, and run a
# few Hypothesis examples each (the whole suite is `make test`).
FAST_TESTS := not slow and not broker_restart and not cluster and not browser and not fuzz

test-fast: setup
	$(PY) -m ruff check hopcast tests bench scripts
	HOPCAST_HYPOTHESIS_PROFILE=quick $(PY) -m pytest -q -m "$(FAST_TESTS)"

bench: setup
	@bench/setup
	$(PY) -m bench.run

bench-smoke: setup
	@bench/setup
	$(PY) -m bench.run --smoke
	$(PY) -m bench.run --smoke --scenario standard --target hopcast-uvicorn hopcast-granian

faults: setup
	HOPCAST_FAULTS_CLUSTER=1 $(PY) -m pytest -q tests/faults -m cluster
