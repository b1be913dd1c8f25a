# dualbench: two commands for a new user (see README.md).
#   make bench   set up .venv (CPU builds), offline data, run the default comparison
#   make test    set up .venv and run the whole test suite (two pytest workers; what CI runs)
#   make test-fast  the fast tier for the edit loop (pytest -m "not slow")
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup data bench test test-fast clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[cpu,data,report,dev,cluster,port]'
	touch $(STAMP)

setup: $(STAMP)

# Offline data: Fashion-MNIST from Debian (needs root or sudo; skipped quietly otherwise).
data:
	@if [ ! -d /usr/share/datasets/fashion-mnist ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	  elif command -v sudo >/dev/null; then sudo apt-get update -qq && sudo apt-get install -y -qq dataset-fashion-mnist; \
	  else echo "note: cannot install dataset-fashion-mnist (no root); using mnist5k"; fi; fi

# The default comparison: LeNet in both frameworks (Fashion-MNIST, else the real MNIST 5k subset),
# the parity check of every task, and the report built from both.
bench: setup data
	@ds=$$(test -d /usr/share/datasets/fashion-mnist && echo fashion-mnist || echo mnist5k); \
	$(VENV)/bin/dualbench run --task mnist-lenet --dataset $$ds --backend torch,paddle --seeds 0,1 --out runs/quickstart
	-$(VENV)/bin/dualbench parity --all --out runs/quickstart > runs/quickstart/parity.txt
	$(VENV)/bin/dualbench report runs/quickstart
	@echo "tables: runs/quickstart/runs.csv, runs/quickstart/parity.csv, report: runs/quickstart/report.md"

# The whole suite, nothing deselected, on two workers (pytest-xdist); tests that share a Ray cluster or a
# built model pair run on one worker (xdist_group).
test: setup
	$(PY) -m pytest -q -n 2 --dist loadgroup

# The edit loop: every module's public code in about a minute (pytest -m "not slow").
test-fast: setup
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) runs
