# Two commands do all set-up on a fresh machine: `make test` and `make demo`.
# PYTHON=/path/to/python3.12 picks the interpreter; by default a Python 3.12+ is searched.
# `make test` runs the suite against llama-stack 0.7 (.venv) and against the newest OGX
# (.venv-ogx); they cannot share a venv: llama-stack 0.7 needs mcp<2, OGX mcp>=2. Then the
# stack, seed, persistence and keep tests once more with every store on Postgres (a
# throwaway server from pip's pgserver: nothing to install on the machine), and the
# server-mode tests with `exec` servers (the default is `fork`). The container-mode tests
# run in the first two, on an image built once per machine (`make test-image`).
VENV ?= .venv
OGX_VENV ?= .venv-ogx
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
OGX_STAMP := $(OGX_VENV)/.installed

.PHONY: test test-llama-stack test-ogx test-postgres test-exec test-image demo docs lint bench clean

$(STAMP): pyproject.toml
	rm -rf $(VENV)
	"$$(.ci/find-python)" -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[stack,postgres,dev,docs,inference]'
	touch $(STAMP)

$(OGX_STAMP): pyproject.toml
	rm -rf $(OGX_VENV)
	"$$(.ci/find-python)" -m venv $(OGX_VENV)
	$(OGX_VENV)/bin/python -m pip install -q --upgrade pip
	$(OGX_VENV)/bin/python -m pip install -q --upgrade -e '.[ogx,postgres,dev,inference]'
	touch $(OGX_STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check pytest_llamastate tests examples bench tools
	$(VENV)/bin/ruff format --check pytest_llamastate tests examples bench tools
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# One after the other: each already uses both cores (-n 2).
test: lint docs test-llama-stack test-ogx test-postgres test-exec

test-llama-stack: $(STAMP) test-image
	$(VENV)/bin/pytest -n 2 tests

test-ogx: $(OGX_STAMP) test-image
	$(OGX_VENV)/bin/pytest -n 2 tests

# The container suite's image (tests/container_image.py: debootstrap + pip, no registry),
# built once per machine and again when its recipe changes; its name is printed. Where it
# cannot be built or run, tests/test_container.py skips saying why (so `-`: not fatal).
test-image: $(STAMP)
	-$(PY) tests/container_image.py

test-postgres: $(STAMP)
	LLAMASTATE_TEST_BACKEND=postgres $(VENV)/bin/pytest -n 2 tests

# The server-mode tests once more with servers started by `llama stack run` (exec).
test-exec: $(STAMP) $(OGX_STAMP)
	LLAMASTATE_TEST_SERVER_PROCESS=exec $(VENV)/bin/pytest -n 2 tests
	LLAMASTATE_TEST_SERVER_PROCESS=exec $(OGX_VENV)/bin/pytest -n 2 tests

# The documentation site, strictly: a broken link, a missing page or a failing reference
# generator fails. Its examples run in the suite (tests/test_docs.py), on both flavors.
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict --site-dir site

demo: $(STAMP)
	$(VENV)/bin/pytest -v examples

bench: $(STAMP)
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) $(OGX_VENV) .pytest_cache .mypy_cache .ruff_cache site
