# trafficrnn — `make demo` runs the main job on the embedded data, `make test` runs the tests.
# Both create (or refresh) .venv themselves. Override the torch pin with e.g. `make test TORCH=torch==2.14.1`.

PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# one stamp per torch pin, so changing TORCH reinstalls; pyproject changes reinstall too
STAMP := $(VENV)/.installed-$(shell echo '$(TORCH)' | tr -c 'A-Za-z0-9.\n' '_')
PYTEST_ARGS ?= -n 2

.PHONY: demo test lint venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# the torch pin goes first and constrains every later install: an unpinned torch
	# (also one pulled in by lightning) would download a multi-GB CUDA build
	$(PIP) install --quiet "$(TORCH)"
	echo "$(TORCH)" > $(VENV)/torch-constraint.txt
	$(PIP) install --quiet -c $(VENV)/torch-constraint.txt -e ".[dev]"
	rm -f $(VENV)/.installed-*
	touch $@

demo: $(STAMP)
	$(VENV)/bin/trafficrnn demo

test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) trafficrnn-demo .pytest_cache
