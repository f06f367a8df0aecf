# PruneLab: `make run` reproduces the default experiment, `make test` checks everything.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export UV_PYTHON_DOWNLOADS := never
export PYTHONHASHSEED := 0
# The greedy scheduler: the default ILP one solves an optimisation problem at every scheduling round, which
# PruneLab (no scarce resources to pack on one machine) does not need with hundreds of small jobs.
# PYTHONDONTWRITEBYTECODE may be set by the machine: the venv is byte-compiled once at install (--compile-bytecode)
# so that each of the workflow's many short jobs does not recompile torch from source (about 2 s a process).
unexport PYTHONDONTWRITEBYTECODE
CONFIG ?= config/config.yaml
CORES ?= all
SNAKEMAKE := $(BIN)/snakemake --configfile $(CONFIG) --scheduler greedy
EXPERIMENT = $(shell $(BIN)/python -c "import yaml,sys; print(yaml.safe_load(open('$(CONFIG)'))['experiment'])")
MLFLOW_PORT ?= 5000

.PHONY: venv run test unit lint report bench mlflow-ui mlflow-server mlflow-sync dry-run clean conda-env

venv: $(VENV)/.synced

$(VENV)/.synced: pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	uv sync --locked --compile-bytecode --python $(PYTHON)
	@touch $@

run: venv
	$(SNAKEMAKE) --cores $(CORES) --rerun-incomplete $(if $(GPUS),--resources gpu=$(GPUS),)

dry-run: venv
	$(SNAKEMAKE) --cores $(CORES) --dry-run

test: venv unit lint

unit: venv
	$(BIN)/python -m pytest -q

lint: venv
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

requirements.lock: uv.lock
	uv export --locked --no-dev --no-emit-project --format requirements-txt -o $@

conda-env:
	conda env create -f environment.yml && conda run -n prunelab pip install --no-deps -e .
