# Set-up, serve and test targets. `make test` is what CI runs (through .ci/run).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
STAMP := $(VENV)/.installed

.PHONY: install serve test lint typecheck pytest examples clean

install: $(STAMP)

# Re-run pip only when the project metadata changes; the venv itself is created once.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

serve: install
	$(BIN)/clconv serve --host $(HOST) --port $(PORT)

lint: install
	$(BIN)/ruff check service tests examples
	$(BIN)/ruff format --check service tests examples

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/python -m pytest -q

test: lint typecheck pytest

examples: install
	$(BIN)/python examples/image_filters.py --out docs/examples
	$(BIN)/python examples/digits_cnn.py

clean:
	rm -rf $(VENV) build *.egg-info service/*.egg-info
