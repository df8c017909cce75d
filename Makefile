# The two commands of the README: `make run` sets up and runs the main job (`hapruned demo`); `make test`
# sets up and runs the test suite (what CI runs). Both are safe to repeat. See docs/install.md.
#
# Where hapruned is installed: inside an active virtual environment (VIRTUAL_ENV) or conda environment
# (CONDA_PREFIX), into it; otherwise into .venv here, which make creates on first use (a distribution's
# own Python refuses system-wide pip installs, PEP 668). `make PYTHON=/path/to/python ...` picks the
# interpreter yourself.
ifneq ($(VIRTUAL_ENV)$(CONDA_PREFIX),)
PYTHON ?= python3
ENVIRONMENT = the active environment ($(or $(VIRTUAL_ENV),$(CONDA_PREFIX)))
else
VENV = .venv
PYTHON ?= $(VENV)/bin/python
# as activating it would: the commands the recipes start (the tests' scripts, say) find its python3 first
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
ENVIRONMENT = $(VENV), made by make (activate it with . $(VENV)/bin/activate to use the hapruned command)
endif

# torch is installed only when none is importable, so a torch already there (a CUDA build, say) stays.
# Otherwise the CPU build: from pip's own sources if they offer it (a mirror, --find-links), else from
# PyTorch's CPU index. The +cpu in the spec is what keeps a multi-GB CUDA build from ever being pulled
# (on PyPI, the Linux torch wheels are CUDA builds).
TORCH_SPEC ?= torch==2.13.0+cpu
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
# files `make clean` removes: what the build and `make run` / `make smoke` write
RUNS = runs/demo runs/smoke
# Whether this checkout is the hapruned installed in the environment, with its compiled extension loading.
INSTALLED = import importlib.metadata as m, json, pathlib, sys, torch, hapruned._C; \
	sys.exit(json.loads(m.distribution("hapruned").read_text("direct_url.json"))["url"] != pathlib.Path.cwd().as_uri())
# What the extension is built from: when one is newer than it, setting up builds it again.
BUILD_INPUTS = setup.py pyproject.toml $(shell find csrc -type f 2>/dev/null)

.PHONY: setup run smoke test bench clean

setup: $(if $(VENV),$(VENV)/bin/python)
	@echo 'make: installing hapruned into $(ENVIRONMENT)'
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install "$(TORCH_SPEC)" 2>/dev/null \
		|| { echo "make: pip's sources offer no $(TORCH_SPEC); taking it from $(TORCH_INDEX)"; \
		     $(PYTHON) -m pip install --extra-index-url "$(TORCH_INDEX)" "$(TORCH_SPEC)"; }
	@if $(PYTHON) -c '$(INSTALLED)' 2>/dev/null && [ -z "$$(find $(BUILD_INPUTS) -newer $(firstword $(wildcard hapruned/_C*.so)))" ]; \
	then echo "make: hapruned is installed from here and its extension is up to date"; \
	else set -x; $(PYTHON) -m pip install "setuptools>=77" wheel ninja \
	     && $(PYTHON) -m pip install --no-build-isolation -e ".[test]"; fi

$(VENV)/bin/python:
	@echo 'make: no virtual environment is active; creating $(VENV) with python3 -m venv'
	python3 -m venv $(VENV) || { rm -f $(VENV)/bin/python; exit 1; }  # a half-made one is made again next time
	touch $(VENV)/.made-by-make

# the main job: a 95%-sparse policy on setup A against the schemes and the bounds (5 to 6.5 minutes of CPU time)
run: setup
	$(PYTHON) -m hapruned demo --out runs/demo --force

# the smoke grid of `hapruned reproduce` (every Table I method for 4 iterations: a pipeline check, not
# learning), started afresh so that it always matches the current code
smoke: setup
	rm -rf runs/smoke
	$(PYTHON) -m hapruned reproduce --budget smoke --out runs/smoke

test: setup
	$(PYTHON) -m pytest -q

bench: setup
	$(PYTHON) -m pytest benchmarks -q

# what the build, `make run` and `make smoke` made; .venv only if make created it. An install into your own
# environment stays: `pip uninstall hapruned` removes it.
clean:
	rm -rf build hapruned.egg-info hapruned/_C*.so $(RUNS)
	if [ -f .venv/.made-by-make ]; then rm -rf .venv; fi
