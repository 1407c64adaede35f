# The README's commands: `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench venv sysdeps clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,demo]'
	touch $(STAMP)

venv: $(STAMP)

sysdeps:
	bash scripts/install-system-deps.sh

demo: venv
	cd examples/quickstart && ../../$(PY) run.py

test: venv sysdeps
	$(PY) -m pytest $(PYTEST_ARGS)

bench: venv
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache examples/quickstart/.conveyor
