# Run `make help` for the targets. Every target installs what it needs into .venv first.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
# The pipeline's own commands (python, dvc, mlflow, bentoml) come from the project environment.
export PATH := $(abspath $(BIN)):$(PATH)
# Telemetry off for every tool in every process started from here.
export MLFLOW_DISABLE_TELEMETRY := true
export BENTOML_DO_NOT_TRACK := true
export DVC_NO_ANALYTICS := 1
export ITERATIVE_DO_NOT_TRACK := 1
export DO_NOT_TRACK := true
export GX_ANALYTICS_ENABLED := false
export TF_ENABLE_ONEDNN_OPTS := 0
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: help install run test test-fast lint format clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(BIN)/.installed: requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 is required, found {sys.version.split()[0]} at {sys.executable}; set PYTHON=/path/to/python3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $@

install: $(BIN)/.installed ## Create .venv and install the locked stack (once; again when the lock changes)

run: install ## Run the whole pipeline (dvc repro) on params.yaml's data (default: embedded synthetic)
	@[ -d .git ] || { echo "dvc needs a git repository: run from a clone of this project"; exit 1; }
	$(BIN)/dvc repro
	@$(BIN)/dvc metrics show

test: install ## Run every test (unit, data, model, e2e)
	$(BIN)/python -m pytest

test-fast: install ## Run the tests not marked slow or e2e
	$(BIN)/python -m pytest -m "not slow and not e2e"

lint: install ## ruff check and format check
	$(BIN)/ruff check src pipeline serving tests
	$(BIN)/ruff format --check src pipeline serving tests

format: install ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix src pipeline serving tests
	$(BIN)/ruff format src pipeline serving tests

clean: ## Remove pipeline outputs (keeps .venv and the DVC cache)
	rm -rf data/interim data/processed reports
