# `make train` and `make test` do all their own set-up on a fresh machine.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
CONFIG ?= configs/fashion_mnist.yaml
ARGS ?=
PYTEST_ARGS ?=
# Two pytest workers, each taking whole files (module-scoped shared runs stay shared; the one
# SLURM cluster stays in one worker). One test at a time kept about 1 of 2 cores busy (its
# processes start up, wait and tear down in turn): the suite's CPU time is close to its serial wall.
TEST_WORKERS ?= 2
# 2 CPU processes without CUDA; all GPUs of the machine with it (evaluated after set-up).
LAUNCH = $(shell $(PY) -c "import torch; n = torch.cuda.device_count(); print('--config_file launch/cpu.yaml' if n == 0 else f'--config_file launch/multi_gpu.yaml --num_processes {n}' if n > 1 else '--config_file launch/single_gpu.yaml')")

.PHONY: setup data test-deps train test lint docs clean

setup: $(VENV)/.installed data

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# Fashion-MNIST offline: Debian's dataset-fashion-mnist package, where apt is there and we are root.
data:
	@if [ -d /usr/share/datasets/fashion-mnist ] || [ -d data/FashionMNIST/raw ]; then \
		echo "Fashion-MNIST: found"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist) >/dev/null; \
	else \
		echo "Fashion-MNIST: run 'sudo apt-get install dataset-fashion-mnist' or put the idx files under data/FashionMNIST/raw"; \
	fi

train: setup
	$(VENV)/bin/superconverge launch $(LAUNCH) --config $(CONFIG) $(ARGS)

# The SLURM tests start a real single-node cluster from Debian's packages; the compile test
# needs a C++ compiler for inductor's CPU kernels (root only; without them those tests skip).
TEST_PACKAGES = slurmctld slurmd slurm-client munge g++
test-deps:
	@if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null && command -v g++ >/dev/null; then \
		echo "SLURM and g++: found"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(TEST_PACKAGES)) >/dev/null; \
	else \
		echo "SLURM or g++: not installed and not root: the SLURM and compile tests will be skipped"; \
	fi

test: setup test-deps
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests train.py lr_find.py benchmarks examples
	$(VENV)/bin/ruff format --check src tests train.py lr_find.py benchmarks examples

# docs/configuration.md is generated from the config schema (a test fails when it is stale).
docs: $(VENV)/.installed
	$(PY) -m superconverge.reference > docs/configuration.md

clean:
	rm -rf runs .pytest_cache
