# RodeoAI: `make run` serves the app, `make test` runs the test suite. Both set up .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
# torch is installed first and pinned: an open torch requirement would pull the multi-GB CUDA
# build. llama-cpp-python is built once as a portable wheel by scripts/llama_wheel.sh (pip's
# own cache keeps a -march=native build keyed by version only, and that build segfaulted on
# this CPU's AMX path), then installed from that folder, replacing any other build of the
# same version
# (its dependencies come with the app).
TORCH  := torch==2.13.0
LLAMA  := 0.3.36
LLAMA_INSTALL = $(BIN)/pip install --quiet --no-index --no-deps --force-reinstall \
	--find-links "$$(sh scripts/llama_wheel.sh $(BIN)/pip $(LLAMA))" llama-cpp-python==$(LLAMA)

.PHONY: run test e2e-openwebui lint format bench setup setup-dev clean help
.DEFAULT_GOAL := help

help:  ## List the targets
	@grep -E '^[a-z0-9-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed-run: pyproject.toml scripts/llama_wheel.sh | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH)
	$(LLAMA_INSTALL)
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml scripts/llama_wheel.sh | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH)
	$(LLAMA_INSTALL)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed-run

setup: $(VENV)/.installed-run  ## Create .venv and install the app

setup-dev: $(VENV)/.installed-dev  ## Create .venv and install the app with test tools

run: setup  ## Set up, load the starter knowledge on first run, and serve on RODEOAI_PORT (8000)
	$(BIN)/rodeoai serve

test: setup-dev  ## Set up and run the test suite on SQLite and on a real PostgreSQL (pgserver), side by side
	@sh scripts/ensure_chromium.sh
	@sh scripts/test_passes.sh $(BIN)/pytest

e2e-openwebui: setup-dev  ## RodeoAI behind the real Open WebUI 0.12.4 (its venv is cached; first run minutes, ~3 GB)
	@sh scripts/openwebui_env.sh
	$(BIN)/pytest tests/e2e/test_openwebui.py --openwebui

lint: setup-dev  ## ruff, mypy and the import contracts
	$(BIN)/ruff check server tests scripts
	$(BIN)/ruff format --check server tests scripts
	$(BIN)/mypy
	$(BIN)/lint-imports

format: setup-dev  ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix server tests scripts
	$(BIN)/ruff format server tests scripts

bench: setup-dev  ## Print every performance goal: figure, raw peer, ratio, pass or miss (BENCH_ARGS=--quick)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python scripts/benchmark.py $(BENCH_ARGS)

clean:  ## Remove the venv and caches (not your data)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
