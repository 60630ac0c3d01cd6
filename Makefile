# The two commands of the README: `make demo` (the main job) and `make test`.
PYTHON ?= python3

.PHONY: setup demo test test-quick baselines

setup:
	PYTHON=$(PYTHON) scripts/setup.sh

demo: setup
	tinyseg demo

# One pytest worker per core; a test file stays on one worker, so its compiled models are shared.
PYTEST = $(PYTHON) -m pytest -q -n auto --dist loadfile

test: setup
	$(PYTEST)

test-quick: setup
	$(PYTEST) -m "not slow"

baselines: setup
	$(PYTHON) benchmarks/baselines.py
