# cld-lightning: set-up, main job, tests and benchmarks.
# The install step is pinned for the development machine (CPython 3.11, x86_64, pip capped at
# torch 2.14.1 / torchvision 0.29.1); pyproject.toml keeps ranges that any user can satisfy.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed
FMNIST_SYSTEM := /usr/share/datasets/fashion-mnist

.PHONY: install train test test-slow test-avx2 lint bench bench-curves bench-cld-pays bench-selection reports report-cld-pays report-selection clean

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
# 8 min 31 s on an avx512_bf16 CPU, 14 min 5 s as an (emulated) AVX2-only CPU, both 2-core Intel
# Xeon 2026-12-08, kNN 83.5 %; prints the learned kNN next to raw pixels and the untrained network.
# docs/BENCHMARKS.md#main-job-make-train
train: install
	$(VENV)/bin/cld-train experiment=fashion_mnist_moco_cld

test: install
	$(PY) -m pytest -q

test-slow: install
	$(PY) -m pytest -q -m slow

# As an AVX2-only CPU runs (no AVX-512, no native bf16), on any x86 machine: oneDNN held at AVX2,
# ATen at its AVX2 kernels (docs/OPERATIONS.md "Precision and memory layout per device"). The
# tests that train convolutional backbones, then 60 steps of the main job (`auto` must pick fp32).
AVX2_ENV := ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2
AVX2_RUN := outputs/test_avx2
test-avx2: install
	$(AVX2_ENV) $(PY) -m pytest -q tests/test_device_choice.py tests/test_train.py tests/test_evaluate.py
	rm -rf $(AVX2_RUN)
	$(AVX2_ENV) timeout -k 30 900 $(VENV)/bin/cld-train experiment=fashion_mnist_moco_cld \
	  trainer.max_steps=60 trainer.max_epochs=-1 final_knn=false baselines=false \
	  selection.enabled=false plots.enabled=false logger=none hydra.run.dir=$(AVX2_RUN)
	grep -q "value: 32-true" $(AVX2_RUN)/.hydra/device.yaml

lint: install
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts

bench: install
	$(PY) benchmarks/step_time.py
	$(PY) benchmarks/data_throughput.py
	$(PY) benchmarks/scaling.py
	$(PY) benchmarks/cpu_step.py

# Hours on 2 CPU cores (resumable; commits partial JSON): learning curves and the NPID ablation.
bench-curves: install
	$(PY) benchmarks/learning_curves.py --parallel 2 --threads 1
	$(PY) benchmarks/npid_ablation.py

# Where CLD pays (equal views and optimiser steps) and label-free selection on real sweeps: hours
# on 2 CPU cores, resumable (run again to continue); the tables and plots come from cld-report.
bench-cld-pays: install
	cd benchmarks && ../$(PY) where_cld_pays.py --settings balanced lt100 --methods moco moco_cld npid npid_cld --seeds 0 1 2
	cd benchmarks && ../$(PY) where_cld_pays.py --settings lt10 correlated_x10 subset4k digits --seeds 0
	$(MAKE) report-cld-pays

bench-selection: install
	cd benchmarks && ../$(PY) selection_sweeps.py --settings balanced lt100 subset4k --repeat-seeds 1 2
	cd benchmarks && ../$(PY) selection_sweeps.py --settings lt100 balanced --heads normlinear normmlp
	$(MAKE) report-selection

# Every committed report from the committed raw runs (benchmarks/runs/<study>, benchmarks/reports.py
# holds each study's cld-report options); a study without raw runs is named, not regenerated.
reports:
	$(PY) benchmarks/reports.py

report-cld-pays:
	$(PY) benchmarks/reports.py --only where_cld_pays

report-selection:
	$(PY) benchmarks/reports.py --only selection_sweeps/balanced selection_sweeps/lt100 selection_sweeps/subset4k

clean:
	rm -rf outputs multirun wandb lightning_logs

# ---- GPU check (issue 20; docs/GPU_CHECK.md): one prepared command for the lent H200 ----------
# `make gpu-carry` here (wheels + Fashion-MNIST copy + size check), then the device call runs
# `make gpu-check` (< 9 min; exits 2 where there is no CUDA). No venv there: python3 holds torch.
GPU_PY ?= $(if $(wildcard $(PY)),$(PY),python3)
GPU_CHECK_ARGS ?=
# What cld-train imports and the device lacks (KINDS.md): hydra-core, omegaconf and their missing
# dependency antlr4-python3-runtime (PyYAML, packaging are there). wandb is not carried: with
# logger=csv cld-train never imports it (the --smoke run hides it), and its wheel alone is 20 MB.
GPU_WHEELS := hydra-core==1.3.8 omegaconf==2.3.1
# sdist only on PyPI: `pip wheel` builds it here into a pure-Python py3-none-any wheel
GPU_SDISTS := antlr4-python3-runtime==4.9.3
GPU_PLATFORMS := --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64

.PHONY: gpu-check gpu-wheels gpu-data gpu-carry

gpu-check:
	$(GPU_PY) scripts/gpu_check.py $(GPU_CHECK_ARGS)

gpu-wheels:
	mkdir -p .whl
	$(GPU_PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
	  --implementation cp $(GPU_PLATFORMS) -d .whl $(GPU_WHEELS)
	$(GPU_PY) -m pip wheel -q --no-deps -w .whl $(GPU_SDISTS)
	@ls -l .whl

gpu-data:
	mkdir -p .gpu_carry/fashion-mnist
	cp $(FMNIST_SYSTEM)/*-ubyte.gz .gpu_carry/fashion-mnist/

gpu-carry: gpu-wheels gpu-data
	$(GPU_PY) scripts/gpu_check.py --carry-size
