# The README's commands: `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEV_STAMP := $(VENV)/.installed-dev
DEMO_STAMP := $(VENV)/.installed-demo

.PHONY: demo test bench venv sysdeps clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# The demo needs only numpy and scikit-learn; the suite needs everything.
$(DEMO_STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e '.[demo]'
	touch $@

$(DEV_STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e '.[dev,demo]'
	touch $@ $(DEMO_STAMP)

venv: $(DEV_STAMP)

sysdeps:
	bash scripts/install-system-deps.sh

demo: $(DEMO_STAMP)
	cd examples/quickstart && $(abspath $(PY)) run.py

test: venv sysdeps
	$(PY) -m pytest $(PYTEST_ARGS)

bench: venv
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache examples/quickstart/.conveyor
