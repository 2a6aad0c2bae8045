# Two commands do all set-up on a fresh machine: `make test` and `make demo`.
# PYTHON=/path/to/python3.12 picks the interpreter; by default a Python 3.12+ is searched.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo lint bench clean

$(STAMP): pyproject.toml
	rm -rf $(VENV)
	"$$(.ci/find-python)" -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[stack,dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check pytest_llamastate tests examples bench
	$(VENV)/bin/ruff format --check pytest_llamastate tests examples bench
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/pytest -n 2 tests

demo: $(STAMP)
	$(VENV)/bin/pytest -v examples

bench: $(STAMP)
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
