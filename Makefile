# Two entry points for a fresh clone:
#   make book   set up .venv, execute every notebook with papermill, build the HTML book (_build/html)
#   make test   set up .venv, run the test suite
# PROFILE=cpu (default, small parameters) or PROFILE=gpu (full parameters, on a CUDA machine).

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.awm-installed
PROFILE ?= cpu
SRC := build/book-src

.PHONY: setup test test-book test-lab book lab lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# torch first, pinned, so pip takes the CPU wheel instead of GBs of CUDA packages
	$(PY) -m pip install -q torch==2.13.0 2>&1 | { grep -v '^WARNING: Location' || true; }
	$(PY) -m pip install -q -e ".[book,dev,jpeg]" 2>&1 | { grep -v '^WARNING: Location' || true; }
	$(PY) -c "import awm_lib, torch, transformers, pydicom, papermill, jupyter_book, jupyterlab, selenium"
	@touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check awm_lib tests scripts benchmarks

# --- the book ---------------------------------------------------------------
NOTEBOOKS := $(sort $(wildcard notebooks/*.ipynb))
EXECUTED := $(patsubst notebooks/%,$(SRC)/notebooks/%,$(NOTEBOOKS))
LIBSRC := $(shell find awm_lib -name '*.py' 2>/dev/null) $(wildcard results/*.json) notebooks/profiles.yml
BOOKSRC := _config.yml _toc.yml references.bib $(shell find book -type f 2>/dev/null)

$(SRC)/.profile-$(PROFILE):
	@mkdir -p $(SRC)
	@rm -f $(SRC)/.profile-*
	@touch $@

# one papermill run per notebook, redone only when the notebook, the library or the profile changed
$(SRC)/notebooks/%.ipynb: notebooks/%.ipynb $(LIBSRC) scripts/execute_notebook.py $(SRC)/.profile-$(PROFILE) | $(STAMP)
	$(PY) scripts/execute_notebook.py $< $@ --profile $(PROFILE)

_build/html/index.html: $(EXECUTED) $(BOOKSRC) | $(STAMP)
	rm -rf _build $(SRC)/book $(SRC)/_config.yml $(SRC)/_toc.yml
	cp -r book _config.yml _toc.yml references.bib $(SRC)/
	$(VENV)/bin/jupyter-book build $(SRC) --path-output . -W --keep-going
	@echo "book: file://$(CURDIR)/_build/html/index.html"

book: _build/html/index.html

test-book: book
	$(PY) -m pytest -m book

# --- the live book ------------------------------------------------------------
# JupyterLab on the chapters, each kernel the project's .venv started in the project root
# (as when the book is built). LAB_ARGS: e.g. LAB_ARGS="--no-browser --port 8899".
LAB_ARGS ?=
lab: $(STAMP)
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (awm .venv)" >/dev/null
	JUPYTER_PREFER_ENV_PATH=1 $(VENV)/bin/jupyter lab --config=scripts/jupyter_lab_config.py $(LAB_ARGS)

# chapter 7 in a JupyterLab started by the test, driven by headless Chromium (chromium + chromium-driver)
test-lab: $(STAMP)
	$(PY) -m pytest -m lab

clean:
	rm -rf _build build
