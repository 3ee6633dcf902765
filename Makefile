# One-command set-up and the two README commands. Everything runs inside .venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Keep Jupyter/IPython state of test runs out of $HOME.
export JUPYTER_CONFIG_DIR := $(CURDIR)/.cache/jupyter/config
export JUPYTER_DATA_DIR := $(CURDIR)/.cache/jupyter/data
export IPYTHONDIR := $(CURDIR)/.cache/ipython
export MPLCONFIGDIR := $(CURDIR)/.cache/matplotlib
$(shell mkdir -p .cache/jupyter/config .cache/jupyter/data .cache/ipython .cache/matplotlib)

.PHONY: setup demo test test-all export clean-nbs check-sync bench docs

setup: $(STAMP)

$(STAMP): settings.ini setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (intaghand)" >/dev/null
	@touch $(STAMP)
	@echo "environment ready: $(VENV)"

# The main job: the demo on the embedded defaults.
demo: setup
	$(VENV)/bin/intaghand demo --save_path output/demo

# The whole test suite: notebooks (nbdev's runner, slow cells skipped) and pytest.
test: setup
	$(VENV)/bin/nbdev_test --n_workers 2 --timing
	@$(PY) -m pytest -q tests; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: treating as a failure"; exit 1; fi; exit $$rc

# Everything, including cells and tests marked slow.
test-all: setup
	$(VENV)/bin/nbdev_test --n_workers 2 --flags slow --timing
	$(PY) -m pytest -q tests --runslow

export: setup
	$(VENV)/bin/nbdev_export

clean-nbs: setup
	$(VENV)/bin/nbdev_clean

# Fails when the notebooks and the exported package (or the cleaned notebooks) disagree with git.
check-sync: setup
	$(VENV)/bin/nbdev_export
	$(VENV)/bin/nbdev_clean
	@if [ -n "$$(git status --porcelain -- intaghand nbs)" ]; then \
	  echo "notebooks and intaghand/ are out of sync or notebooks are not clean:"; \
	  git status --porcelain -- intaghand nbs; git --no-pager diff --stat -- intaghand nbs; exit 1; fi
	@echo "export and notebooks in sync"

bench: setup
	@for f in bench/[!_]*.py; do echo "== $$f"; $(PY) $$f --quick || exit 1; done

# The chapters executed (as nbdev_test runs them) and rendered to a static site: _docs/index.html.
# Options through DOCS_ARGS, e.g. make docs DOCS_ARGS="--only 01_io,05_render --force" (see tools/docs.py).
docs: setup
	$(PY) tools/docs.py $(DOCS_ARGS)
