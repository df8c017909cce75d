# The two commands of the README. `make run` sets up and runs the main job; `make test` sets up
# and runs the test suite (what CI runs). Both are safe to repeat.
PYTHON ?= python3
# The CPU build of torch; installed only when no torch is importable, so an existing CUDA build stays.
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup run test bench
setup:
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install "$(TORCH_SPEC)"
	$(PYTHON) -m pip install "setuptools>=77" wheel ninja
	$(PYTHON) -m pip install --no-build-isolation -e ".[test]"

# the smoke grid of `hapruned reproduce` (every Table I method for a few iterations; prints the table),
# started afresh so that it always matches the current code
run: setup
	rm -rf runs/smoke
	$(PYTHON) -m hapruned reproduce --budget smoke --out runs/smoke

test: setup
	$(PYTHON) -m pytest -q

bench: setup
	$(PYTHON) -m pytest benchmarks -q
