# cld-lightning: set-up, main job, tests and benchmarks.
# The install step is pinned for the development machine (CPython 3.11, x86_64, pip capped at
# torch 2.14.1 / torchvision 0.29.1); pyproject.toml keeps ranges that any user can satisfy.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed
FMNIST_SYSTEM := /usr/share/datasets/fashion-mnist

.PHONY: install train test test-slow lint bench bench-curves clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e ".[dev,faiss,sweep,slurm,plots]"
	@# Default data set for the main job: Debian's Fashion-MNIST package, where apt is available.
	@if [ ! -d $(FMNIST_SYSTEM) ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = "0" ]; then \
	    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) \
	      || echo "note: apt could not install dataset-fashion-mnist; cld-train will try data.root, then a download"; \
	  else echo "note: no root apt; cld-train will look in data.root, then try torchvision's download"; fi; \
	fi
	touch $(STAMP)

# Main job: MoCo v2+CLD pretraining on Fashion-MNIST (no download), small ConvNet, 2 CPU cores:
# 7-13 minutes (27-46 s an epoch, about 1,300-2,200 images/s: 6 min 51 s on the development
# machine, 12 min 25 s on another 2-core AMD EPYC with avx512_bf16, same 83.98 % kNN); prints
# the learned kNN next to raw pixels and the untrained network. docs/BENCHMARKS.md#main-job-make-train
train: install
	$(VENV)/bin/cld-train experiment=fashion_mnist_moco_cld

test: install
	$(PY) -m pytest -q

test-slow: install
	$(PY) -m pytest -q -m slow

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

bench: install
	$(PY) benchmarks/step_time.py
	$(PY) benchmarks/data_throughput.py
	$(PY) benchmarks/scaling.py
	$(PY) benchmarks/cpu_step.py

# Hours on 2 CPU cores (resumable; commits partial JSON): learning curves and the NPID ablation.
bench-curves: install
	$(PY) benchmarks/learning_curves.py --parallel 2 --threads 1
	$(PY) benchmarks/npid_ablation.py

clean:
	rm -rf outputs multirun wandb lightning_logs
