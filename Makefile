# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Pinned here, ranged in pyproject: an unpinned torch pulls a multi-GB CUDA build.
TORCH_VERSION ?= 2.13.0
STAMP := $(VENV)/.installed

.PHONY: demo test lint unit venv reference reference-mnist reference-cifar10 bench-offline clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install -q -e '.[dev,report,demo]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/distree demo

lint: $(STAMP)
	$(BIN)/ruff check distree_mqtt tests
	$(BIN)/ruff format --check distree_mqtt tests
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q

# Reference bundles and their offline reports (benchmarks, not tests).
reference-mnist: $(STAMP)
	$(BIN)/distree train configs/train/mnist.toml --out runs/mnist --no-resume --bundle distree_mqtt/reference/mnist
	$(BIN)/distree bench offline --model mnist

reference-cifar10: $(STAMP)
	$(BIN)/distree train configs/train/cifar10.toml --out runs/cifar10 --bundle distree_mqtt/reference/cifar10
	$(BIN)/distree bench offline --model cifar10

reference: reference-mnist reference-cifar10

bench-offline: $(STAMP)
	$(BIN)/distree bench offline

clean:
	rm -rf $(VENV) runs .cache .pytest_cache .mypy_cache .ruff_cache
