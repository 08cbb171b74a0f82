# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Pinned here, ranged in pyproject: an unpinned torch pulls a multi-GB CUDA build.
TORCH_VERSION ?= 2.13.0
STAMP := $(VENV)/.installed
# Home Assistant needs Python >= 3.12 (the project targets 3.11): its tests get their own venv.
HA_VENV := .venv-ha
HA_STAMP := $(HA_VENV)/.installed
HA_PYTHON ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python) $(shell command -v python3.12 2>/dev/null))

.PHONY: demo test test-homeassistant lint unit venv reference reference-mnist reference-cifar10 bench-offline clean install-gateway

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
	$(BIN)/ruff check distree_mqtt tests homeassistant
	$(BIN)/ruff format --check distree_mqtt tests
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q
	$(MAKE) --no-print-directory test-homeassistant

# The custom integration and the discovery payloads in real Home Assistant (homeassistant/tests).
$(HA_STAMP): homeassistant/requirements-test.txt
	test -x $(HA_VENV)/bin/python || $(HA_PYTHON) -m venv $(HA_VENV)
	$(HA_VENV)/bin/python -m pip install -q --upgrade pip
	$(HA_VENV)/bin/python -m pip install -q -r homeassistant/requirements-test.txt
	touch $(HA_STAMP)

ifeq ($(strip $(HA_PYTHON)),)
test-homeassistant:
	@echo "skipping Home Assistant tests: no Python >= 3.12 found"
else
test-homeassistant: $(HA_STAMP)
	cd homeassistant && ../$(HA_VENV)/bin/python -m pytest -q
endif

# Reference bundles and their offline reports (benchmarks, not tests).
reference-mnist: $(STAMP)
	$(BIN)/distree train configs/train/mnist.toml --out runs/mnist --no-resume --bundle distree_mqtt/reference/mnist
	$(BIN)/distree bench offline --model mnist

# TRAIN_DEVICE=cuda where there is a GPU (minutes instead of 3.5 hours on 2 CPU cores).
TRAIN_DEVICE ?= cpu
reference-cifar10: $(STAMP)
	$(BIN)/distree train configs/train/cifar10.toml --out runs/cifar10 --device $(TRAIN_DEVICE) --bundle distree_mqtt/reference/cifar10
	$(BIN)/distree bench offline --model cifar10

reference: reference-mnist reference-cifar10

bench-offline: $(STAMP)
	$(BIN)/distree bench offline

# A gateway: /opt/distree venv (torch pinned), /etc/distree settings and credentials, systemd
# units. Run as root; MACHINE=configs/deployments/<deployment>/<machine> copies its settings.
# DESTDIR and PREFIX are honoured (see systemd/install-gateway.sh --help).
install-gateway:
	TORCH_VERSION=$(TORCH_VERSION) PYTHON=$(PYTHON) systemd/install-gateway.sh $(if $(MACHINE),--machine $(MACHINE))

clean:
	rm -rf $(VENV) $(HA_VENV) runs .cache .pytest_cache .mypy_cache .ruff_cache
