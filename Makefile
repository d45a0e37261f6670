# Two entry points for a fresh machine (see README "Quick start"):
#   make demo   install into .venv and run jobs/demo.py end to end on local defaults
#   make test   install into .venv (with the dev extra) and run the test suite
#
# CPU machines: torch is installed first, pinned to $(TORCH_SPEC), so that the project's own
# `torch>=2.4` requirement is already satisfied and pip never pulls a multi-GB CUDA build.
# Elsewhere point pip at PyTorch's CPU wheels: make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu
# GPU machines: make install TORCH_SPEC=torch  (the default CUDA build from PyPI).

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
PYTEST_ARGS ?=
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: install demo test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PIP) install -e ".[dev]"
	@touch $@

demo: install
	$(BIN)/python jobs/demo.py

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install
	$(BIN)/python benchmarks/bench_model.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
