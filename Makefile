# Set-up and everyday commands. `make demo` and `make test` create (or reuse) the virtual env
# in $(VENV) and install everything first: torch pinned to 2.13.0 before anything else, and kept
# there by constraints.txt, so a CPU machine never pulls CUDA wheels.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.crossrec-installed
# Where to get torch from; e.g. TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu on a CPU
# box whose default index only has CUDA builds.
TORCH_INDEX_URL ?=
TORCH_PIP_ARGS := $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL),)
# `make demo` serves for 2 minutes after the last step; DEMO_ARGS= serves until Ctrl-C.
DEMO_ARGS ?= --exit-after 120
PYTEST_ARGS ?=

.PHONY: install demo test test-floors lint format clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_PIP_ARGS) "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/crossrec demo $(DEMO_ARGS)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest $(PYTEST_ARGS)

# The suite on the lowest versions pyproject.toml allows (.ci/floors.py): a fresh env of its own.
FLOORS_VENV ?= .venv-floors
test-floors:
	test -x $(FLOORS_VENV)/bin/python || $(PYTHON) -m venv $(FLOORS_VENV)
	$(PYTHON) .ci/floors.py > $(FLOORS_VENV)/floors.txt
	$(FLOORS_VENV)/bin/python -m pip install --quiet $(TORCH_PIP_ARGS) "torch==2.13.0"
	$(FLOORS_VENV)/bin/python -m pip install --quiet -c $(FLOORS_VENV)/floors.txt -e ".[dev]"
	$(FLOORS_VENV)/bin/python .ci/floors.py --check
	$(FLOORS_VENV)/bin/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) $(FLOORS_VENV) .pytest_cache .mypy_cache .ruff_cache
