# `make demo` and `make test` each build the virtualenv first, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: venv install demo test lint format typecheck bench clean

venv install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/batchgen run jobs/ --simulate --sim-latency-ms 300 --sim-fault-rate 0.1 --sim-seed 1
	@echo "Open the gallery in a browser: $(CURDIR)/output/demo/report.html"

lint: $(STAMP)
	$(BIN)/ruff check batchgen tests
	$(BIN)/ruff format --check batchgen tests
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format batchgen tests
	$(BIN)/ruff check --fix batchgen tests

test: lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
