# Sidecar Lab. `make tutorial` runs the whole tutorial headless; `make test` runs the tests;
# `make regression` re-executes the notebooks and compares their outputs with the references,
# `make regression-update` makes the references again from a real run.
# Each target creates and fills .venv on first use.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: tutorial test lint lab clean regression regression-update

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

tutorial: $(STAMP)
	$(VENV)/bin/sidecarlab run

# tests/ and buildpack/integration (pyproject's testpaths); loadgroup keeps the integration suite on one
# worker, so it starts one platform and builds each package once
test: lint
	$(PY) -m pytest -n 2 --dist loadgroup

# ruff (lint) and mypy (types) on src/, as configured in pyproject.toml
lint: $(STAMP)
	$(VENV)/bin/ruff check src
	$(VENV)/bin/mypy

# every notebook on a fresh localcf, its outputs compared with tests/regression/references/ (pytest-notebook)
regression: $(STAMP)
	$(PY) -m sidecarlab.regression

# a real run of every notebook on a fresh localcf, stored as the references (review with `git diff`)
regression-update: $(STAMP)
	$(PY) -m sidecarlab.regression --update

# JupyterLab on the learners' own copies in work/notebooks/ (made where missing, never overwritten);
# extra JupyterLab arguments: make lab LAB_ARGS="--port 8899 --no-browser"; as root, --allow-root is added
.PHONY: learner-copies stop reset
LAB_ARGS ?=
lab: $(STAMP)
	$(VENV)/bin/sidecarlab lab $(LAB_ARGS)

# learner copies of every notebook (solutions removed) in work/notebooks/; a copy with edits is kept
learner-copies: $(STAMP)
	$(VENV)/bin/sidecarlab learner-copy

# stop everything the kit started: ssh tunnels, the embedded S3 server, the localcf daemon
stop: $(STAMP)
	$(VENV)/bin/sidecarlab stop

# back to the start: lists what it deletes and asks first (make reset RESET_ARGS=--yes does not ask)
RESET_ARGS ?=
reset: $(STAMP)
	$(VENV)/bin/sidecarlab reset $(RESET_ARGS)

clean:
	rm -rf build .pytest_cache
