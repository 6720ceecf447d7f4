# Neuron-selection pruning of RNNs: reproduction suite. `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU machines: pin torch to the CPU wheel (a bare torch would pull a multi-GB CUDA build).
# On a GPU machine: make install TORCH_CONSTRAINTS=
TORCH_CONSTRAINTS ?= constraints-cpu.txt
PROFILE ?= auto
SIZES ?= 1500,1500 373,315
EXPORTS ?=
WORKERS ?= 1
GPUS ?=
BENCH_ARGS ?=
# Tests never touch the network: the Hub is unreachable there and W&B stays offline.
TEST_ENV := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline

.PHONY: help install test test-fast reproduce-ptb reproduce-squad tables speed sweep bench lint clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

install:  ## create .venv and install the suite with its dev tools
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install $(if $(TORCH_CONSTRAINTS),-c $(TORCH_CONSTRAINTS)) -e '.[dev]'

$(PY):
	@echo "error: no virtual environment at $(VENV); run 'make install' first" >&2; exit 2

test: | $(PY)  ## all tests, end-to-end and fault-injection runs included (20 min on 2 cores, one training beside it, 2026-12-07)
	$(TEST_ENV) $(PY) -m pytest

test-fast: | $(PY)  ## unit tests only (skips the end-to-end runs marked slow)
	$(TEST_ENV) $(PY) -m pytest -m "not slow"

reproduce-ptb: | $(PY)  ## PTB runs of a profile, then speed, tables, plots: PROFILE=smoke|small|paper (default: paper on GPU, else small); one run per GPU seen (GPUS=0,1 to choose)
	$(PY) -m reproduce profile ptb --profile $(PROFILE) $(if $(GPUS),--gpus $(GPUS))

reproduce-squad: | $(PY)  ## SQuAD runs of a profile: PROFILE=smoke|paper (default: paper on GPU, else smoke), then tables, plots
	$(PY) -m reproduce profile squad --profile $(PROFILE)

tables: | $(PY)  ## rebuild the PTB tables and plots of a profile from its run dirs: PROFILE=smoke|small|paper
	$(PY) -m reproduce table ptb --profile $(PROFILE)

speed: | $(PY)  ## inference speed: EXPORTS="results/ptb/small/l0/export" (-> <run dir>/speed.json), else SIZES="1500,1500 373,315"
	$(PY) -m reproduce speed $(if $(EXPORTS),--export $(EXPORTS),--sizes $(SIZES))

sweep: | $(PY)  ## run a sweep file locally and offline: SWEEP=sweeps/<file>.yaml [WORKERS=1]
	WANDB_MODE=offline $(PY) -m reproduce sweep $(SWEEP) --workers $(WORKERS)

bench: | $(PY)  ## training-step overhead of the gates -> results/bench/bench.json; BENCH_ARGS=--steps: eager vs fused vs graph steps, medium and large -> results/bench/steps.json (idle machine)
	$(PY) -m reproduce bench $(BENCH_ARGS)

lint: | $(PY)  ## ruff
	$(PY) -m ruff check lightning_modules reproduce tests

clean:  ## remove caches (keeps results/ and .venv)
	rm -rf .pytest_cache .ruff_cache build *.egg-info
	find . -name __pycache__ -prune -exec rm -rf {} +
