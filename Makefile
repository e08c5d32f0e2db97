# Two commands on a fresh machine: `make demo` and `make test`. Both build .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Extras the test suite exercises (the CLI, Redis coordination, the Celery export).
EXTRAS := cli,redis,celery

.PHONY: demo demo-cluster test lint typecheck unit coverage test-lowest bench bench-quick clean

# pip >= 25.1 is needed for --group (PEP 735 dependency groups).
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade 'pip>=25.1'

# Reinstall when the project's dependencies change.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]' --group dev
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/sendai-async demo

# The distributed export on one machine: Redis, the sandbox, two Celery workers, a killed
# worker and a 429 window (needs a redis-server binary: apt-get install redis-server).
demo-cluster: $(STAMP)
	$(BIN)/sendai-async demo --workers 2

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The suite under branch coverage ([tool.coverage] in pyproject.toml); the report fails
# below fail_under. A failing test stops here with pytest's exit status.
unit: $(STAMP)
	rm -f .coverage .coverage.*
	$(BIN)/coverage run -m pytest -q
	$(BIN)/coverage report

test: lint typecheck unit

# The unit tests against the oldest supported runtime dependencies (constraints/lowest.txt)
# in a second venv; test tools resolve to the newest that fit.
LOW_VENV := .venv-lowest
LOW_BIN := $(LOW_VENV)/bin
LOW_STAMP := $(LOW_VENV)/.installed

$(LOW_BIN)/python:
	$(PYTHON) -m venv $(LOW_VENV)
	$(LOW_BIN)/python -m pip install --quiet --upgrade 'pip>=25.1'

$(LOW_STAMP): pyproject.toml constraints/lowest.txt | $(LOW_BIN)/python
	$(LOW_BIN)/python -m pip install --quiet -c constraints/lowest.txt -e '.[$(EXTRAS)]' --group test
	touch $(LOW_STAMP)

test-lowest: $(LOW_STAMP)
	@$(LOW_BIN)/python -c "import importlib.metadata as m; print('lowest:', ', '.join(f'{d} {m.version(d)}' for d in ('aiohttp', 'attrs', 'cattrs', 'tenacity', 'orjson', 'yarl')))"
	$(LOW_BIN)/python -m pytest -q

BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]' --group dev --group bench
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.run

bench-quick: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.run --quick

clean:
	rm -rf $(VENV) $(LOW_VENV) .mypy_cache .ruff_cache .hypothesis .coverage .coverage.* htmlcov
