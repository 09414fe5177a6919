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

.PHONY: run test bench lint format typecheck setup clean browser vendor-charts

setup: $(VENV)/.synced

$(UV):
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --target .tools uv==$(UV_VERSION)

$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --quiet
	@touch $@

run: setup
	$(BIN)/bourse up

test: setup browser
	$(BIN)/pytest -q

# The dashboard's browser tests drive Debian's chromium (Playwright cannot download its own
# browser here). Installed when we are root with apt; otherwise we say what is missing, and
# those tests skip with the same words.
CHROMIUM := /usr/bin/chromium
browser:
	@if [ -x $(CHROMIUM) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing chromium for the dashboard's browser tests"; \
		apt-get install -y --no-install-recommends chromium >/dev/null || \
			(apt-get update >/dev/null && apt-get install -y --no-install-recommends chromium >/dev/null); \
	else \
		echo "missing: $(CHROMIUM) (the dashboard's browser tests skip): apt-get install chromium"; \
	fi

# Update the vendored lightweight-charts (needs npm; see docs/dashboard.md): make vendor-charts V=5.2.1
vendor-charts:
	scripts/vendor-lightweight-charts.sh $(V)

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
