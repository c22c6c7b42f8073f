# `make run` and `make test` do all set-up themselves: a virtual environment in .venv with the
# project and its dependencies, rebuilt whenever pyproject.toml changes.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-unit test-e2e lint eval train bench help
.DEFAULT_GOAL := help

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-6s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "digits needs Python 3.11+ (set PYTHON=...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)  ## the server with the shipped model, plus each bot whose token is set (Ctrl-C stops all)
	$(BIN)/digits-run

test: $(STAMP)  ## lint, then the whole test suite
	$(BIN)/python -m ruff check .
	WANDB_MODE=offline $(BIN)/python -m pytest

test-unit: $(STAMP)  ## the fast tests: no servers, no subprocesses (about a minute)
	WANDB_MODE=offline $(BIN)/python -m pytest tests/unit

lint: $(STAMP)  ## ruff
	$(BIN)/python -m ruff check .

test-e2e: $(STAMP)  ## end to end: real gRPC servers, real bots against fake Telegram/Discord on 127.0.0.1
	WANDB_MODE=offline $(BIN)/python -m pytest tests/e2e

eval: $(STAMP)  ## accuracy, calibration and speed of the shipped model on MNIST test
	$(BIN)/digits-eval

train: $(STAMP)  ## retrain the encoder the way the shipped one was trained (see models/README.md)
	$(BIN)/digits-train --epochs 45 --seed 0 --run-dir runs/train

bench: $(STAMP)  ## the benchmark scripts (minutes; numbers printed side by side)
	$(BIN)/python benchmarks/preprocess_robustness.py
	$(BIN)/python benchmarks/server_bench.py
	$(BIN)/python benchmarks/runtime_bench.py
	$(BIN)/python benchmarks/hostile_bench.py
	$(BIN)/python benchmarks/telegram_latency.py
	$(BIN)/python benchmarks/discord_bench.py
	$(BIN)/python benchmarks/feedback_loop.py
