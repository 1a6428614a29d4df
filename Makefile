# `make demo` and `make test` each build the virtualenv first, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: venv install demo test lint format typecheck bench clean screenshot

venv install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(VENV)/.bench-stamp: $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $@

# A benchmark, not a test: ratios against baselines measured in the same run (tests/bench/bench.py).
bench: $(VENV)/.bench-stamp
	$(BIN)/python tests/bench/bench.py $(BENCH_ARGS)

demo: $(STAMP)
	$(BIN)/batchgen run jobs/ --simulate --sim-latency-ms 300 --sim-fault-rate 0.1 --sim-seed 1
	@echo "Open the gallery in a browser: $(CURDIR)/output/demo/report.html"

lint: $(STAMP)
	$(BIN)/ruff check batchgen tests docs
	$(BIN)/ruff format --check batchgen tests docs
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format batchgen tests docs
	$(BIN)/ruff check --fix batchgen tests docs

test: lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# The README's picture of the review loop (needs chromium): the catalog gallery with three cards marked.
screenshot: demo
	$(BIN)/python docs/screenshot.py
