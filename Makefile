# The two commands of the README. Each runs the idempotent set-up first.
PY := .venv/bin/python

.PHONY: setup run test lint bench-setup
setup:
	bash scripts/setup.sh

run: setup
	$(PY) -m selfcritic.run +experiment=nano

test: setup
	$(PY) -m pytest

# every test, the slow ones too (a later -m overrides the default 'not slow')
test-all: setup
	$(PY) -m pytest -m 'slow or not slow'

lint: setup
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

# The peers the benchmarks compare against (TRL): the `trl` extra, which the set-up installs.
bench-setup: setup
