# The README's commands: `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEV_STAMP := $(VENV)/.installed-dev
DEMO_STAMP := $(VENV)/.installed-demo
INSTALL := bash scripts/install-python-deps.sh $(PY)
# pytest-xdist: 3 workers (tests mostly wait on subprocesses and engines: on 2 cores a mixed selection took 74 s
# serially, 45 s on 2 workers, 41 s on 3); each test that needs an engine runs in that engine's xdist group, on
# one worker (tests/fixtures/xdist_groups.py).
# Override: `make test PYTEST_ARGS="-n0 -x tests/test_cli.py"`.
PYTEST_ARGS ?= -n 3 --dist loadgroup --durations=25

.PHONY: demo test bench venv sysdeps nodedeps clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# The demo needs only numpy and scikit-learn; the suite needs everything.
$(DEMO_STAMP): pyproject.toml | $(VENV)/bin/python
	$(INSTALL) -e '.[demo]'
	touch $@

$(DEV_STAMP): pyproject.toml | $(VENV)/bin/python
	$(INSTALL) -e '.[dev,demo]'
	touch $@ $(DEMO_STAMP)

venv: $(DEV_STAMP)

sysdeps:
	bash scripts/install-system-deps.sh

nodedeps:
	bash scripts/install-node-deps.sh

demo: $(DEMO_STAMP)
	cd examples/quickstart && $(abspath $(PY)) run.py

# pip, apt and npm are network-bound: all at once (their output kept apart), then the suite
test:
	$(MAKE) --no-print-directory --jobs=3 --output-sync=target venv sysdeps nodedeps
	$(PY) -m pytest $(PYTEST_ARGS)

bench: venv
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache examples/quickstart/.conveyor
