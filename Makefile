# Bourse — one make target per job. Everything is installed from this repository's own
# files: uv (pinned) into .tools/, then the locked dependencies into .venv/.
PYTHON ?= python3.11
UV_VERSION := 0.13.8
UV := .tools/bin/uv
VENV := .venv
BIN := $(VENV)/bin
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))
export UV_PYTHON := $(PYTHON)
export UV_PYTHON_DOWNLOADS := never

.PHONY: run test bench lint format typecheck setup clean

setup: $(VENV)/.synced

$(UV):
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --target .tools uv==$(UV_VERSION)

$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --quiet
	@touch $@

run: setup
	$(BIN)/bourse up

test: setup
	$(BIN)/pytest -q

bench: setup
	$(UV) sync --frozen --quiet --inexact --group peers
	$(BIN)/python -m benchmarks

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

format: setup
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

clean:
	rm -rf .venv .tools .bourse .pytest_cache .mypy_cache .ruff_cache
