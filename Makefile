# Set-up, serve and test targets. `make test` is what CI runs (through .ci/run).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
STAMP := $(VENV)/.installed

.PHONY: install serve test lint typecheck pytest examples bench clean

install: $(STAMP)

# Re-run pip only when the project metadata changes; the venv itself is created once.
$(STAMP): pyproject.toml clients/python/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip install --quiet -e clients/python
	touch $(STAMP)

serve: install
	$(BIN)/clconv serve --host $(HOST) --port $(PORT)

lint: install
	$(BIN)/ruff check service tests examples clients bench
	$(BIN)/ruff format --check service tests examples clients bench

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/python -m pytest -q tests clients/python/tests

test: lint typecheck pytest

examples: install
	$(BIN)/python examples/image_filters.py --out docs/examples
	$(BIN)/python examples/digits_cnn.py

# Benchmark against PyTorch CPU (about 10 minutes on 2 cores); writes docs/benchmarks.
bench: install
	$(BIN)/python -c 'import matplotlib, torch' 2>/dev/null || $(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/run.py --out docs/benchmarks

clean:
	rm -rf $(VENV) build *.egg-info service/*.egg-info
