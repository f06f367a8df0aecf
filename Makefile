# PruneLab: `make run` reproduces the default experiment, `make test` checks everything.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export UV_PYTHON_DOWNLOADS := never
# The one uv pin (tests use it through `make uv` / `make -s print-uv`): another uv writes uv.lock/requirements.lock
# in another form. `uv` on PATH is used when it is this version, else the one `make uv` installs into .uv/ with
# `$(PYTHON) -m pip install --target` (tools/install_uv.sh): nothing is installed into $(PYTHON) itself, so a
# distribution's externally managed python3.11 (PEP 668) works too.
UV_VERSION := 0.13.9
UV_DIR := $(CURDIR)/.uv
UV_IS_PINNED := grep -qE '^uv $(subst .,\.,$(UV_VERSION))( |$$)'
UV = $(if $(shell uv --version 2>/dev/null | $(UV_IS_PINNED) && echo yes),uv,$(UV_DIR)/bin/uv)
export PYTHONHASHSEED := 0
# PYTHONDONTWRITEBYTECODE may be set by the machine: the venv is byte-compiled once at install (--compile-bytecode)
# so that each of the workflow's many short jobs does not recompile torch from source (about 2 s a process).
unexport PYTHONDONTWRITEBYTECODE
CONFIG ?= config/config.yaml
CORES ?= all
# Scheduler, rerun-incomplete, failed logs, quietness: profiles/default/config.yaml, read by every snakemake run.
SNAKEMAKE := $(BIN)/snakemake --configfile $(CONFIG)
EXPERIMENT = $(shell $(BIN)/python -c "import yaml,sys; print(yaml.safe_load(open('$(CONFIG)'))['experiment'])")
MLFLOW_PORT ?= 5000

.PHONY: uv print-uv print-uv-version data rerun venv run test test-setup unit lint report bench mlflow-ui mlflow-server mlflow-sync dry-run clean conda-env

uv:
	@$(UV) --version 2>/dev/null | $(UV_IS_PINNED) || tools/install_uv.sh $(PYTHON) $(UV_VERSION) $(UV_DIR)

print-uv:
	@echo $(UV)

print-uv-version:
	@echo $(UV_VERSION)

venv: $(VENV)/.synced

$(VENV)/.synced: pyproject.toml uv.lock | uv
	$(UV) sync --locked --compile-bytecode --python $(PYTHON)
	@touch $@

# Fashion-MNIST from Debian's package (files in /usr/share/datasets/fashion-mnist/), where apt can install it.
data:
	@tools/system_packages.sh data

run: venv
	$(SNAKEMAKE) --cores $(CORES) $(if $(GPUS),--resources gpu=$(GPUS),)

# Rerun the jobs of some rules (and everything downstream) after a change in src/prunelab, which Snakemake does
# not track: make rerun RULES="score prune_finetune"
rerun: venv
	@test -n "$(RULES)" || { echo 'name the rules to rerun: make rerun RULES="score prune_finetune"'; exit 2; }
	$(SNAKEMAKE) --cores $(CORES) --forcerun $(RULES) $(if $(GPUS),--resources gpu=$(GPUS),)

dry-run: venv
	$(SNAKEMAKE) --cores $(CORES) --dry-run

test: venv lint unit

# What the suite needs from the system (Fashion-MNIST, a C++ compiler, Python headers): installed with apt-get as
# root, else one line with the command that installs it, before the suite starts.
test-setup: venv
	@tools/system_packages.sh test $(BIN)/python

unit: venv test-setup
	$(BIN)/python -m pytest -q

# The edit-test loop: the unit tests and dry runs, without the tests that run workflow jobs (marker e2e); ~2 minutes.
.PHONY: test-fast
test-fast: venv
	$(BIN)/python -m pytest -q -m "not e2e"

lint: venv
	$(BIN)/python tools/import_contract.py src
	$(BIN)/snakemake --lint --cores 1
	$(BIN)/snakefmt --check Snakefile workflow/rules

report: venv
	$(SNAKEMAKE) --cores $(CORES) --report results/report.zip

BENCH_CONFIG ?= config/config.yaml
bench: venv
	mkdir -p results/bench
	$(BIN)/python benchmarks/stats_overhead.py
	$(BIN)/python benchmarks/structured_speedup.py
	$(BIN)/python benchmarks/training_throughput.py
	$(BIN)/python benchmarks/portable_numerics.py
	$(BIN)/python benchmarks/pipeline_overhead.py --config $(BENCH_CONFIG)

mlflow-ui: venv
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/results/mlflow.db --port $(MLFLOW_PORT)

mlflow-server: venv
	mkdir -p results/mlartifacts
	$(BIN)/mlflow server --backend-store-uri sqlite:///$(CURDIR)/results/mlflow.db \
		--artifacts-destination $(CURDIR)/results/mlartifacts --host 127.0.0.1 --port $(MLFLOW_PORT)

mlflow-sync: venv
	$(BIN)/python -m prunelab.tracking --results results/$(EXPERIMENT) --experiment $(EXPERIMENT) \
		$(if $(URI),--uri $(URI),)

clean:
	rm -rf results/* .snakemake

requirements.lock: uv.lock | uv
	$(UV) export --locked --no-dev --no-emit-project --format requirements-txt -o $@

conda-env:
	conda env create -f environment.yml && conda run -n prunelab pip install --no-deps -e .
