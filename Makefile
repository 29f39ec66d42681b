# Every target creates .venv and installs the project from pyproject.toml first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-16)
PYTEST_ARGS ?=

.PHONY: all venv test lint unit demo bench clean

all: test

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

venv: $(STAMP)

lint: venv
	$(BIN)/ruff check ratls gateway filters triton_backend tests e2e bench conftest.py

# All tests: unit tests, vector tests and the real-stack e2e suite.
test: venv lint
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

demo: venv
	$(BIN)/python -m ratls.demo

bench: venv
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build *.egg-info .demo
