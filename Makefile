# Two commands do all set-up on a fresh machine: `make test` and `make demo`.
# PYTHON=/path/to/python3.12 picks the interpreter; by default a Python 3.12+ is searched.
# `make test` runs the suite against llama-stack 0.7 (.venv) and against the newest OGX
# (.venv-ogx); they cannot share a venv: llama-stack 0.7 needs mcp<2, OGX mcp>=2. Then the
# stack, seed, persistence and keep tests once more with every store on Postgres (a
# throwaway server from pip's pgserver: nothing to install on the machine), and the
# server-mode tests of each feature with `exec` servers (the default is `fork`). The container-mode tests
# run in the first two, on an image built once per machine (`make test-image`).
VENV ?= .venv
OGX_VENV ?= .venv-ogx
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
OGX_STAMP := $(OGX_VENV)/.installed

.PHONY: test test-llama-stack test-ogx test-postgres test-exec test-compat test-image venvs demo docs lint bench clean
.PHONY: $(COMPAT_RELEASES:%=compat-%)

# Every tested release line, each in a venv of its own, pinned the way
# docs/compatibility.md tells users to pin them (pip does not: llama-stack's API and client
# packages float to the newest release, and mcp 2 breaks llama-stack and OGX 0.8). The list,
# the pins and each one's Python come from the plugin's release table (releases/tested.py).
# llama-stack 0.7.3 and OGX 1.5.0 are the two venvs above; the others live in .venvs/.
RELEASES := $(shell python3 pytest_llamastate/releases/tested.py slugs)
VENV_llama-stack-0.7.3 := $(VENV)
VENV_ogx-1.5.0 := $(OGX_VENV)
OLD_RELEASES := $(foreach r,$(RELEASES),$(if $(VENV_$(r)),,$(r)))
RELEASE_STAMPS := $(OLD_RELEASES:%=.venvs/%/.installed)
# The older lines whose compatibility suite `make test` runs: all of them (docs/compatibility.md).
COMPAT_RELEASES := $(OLD_RELEASES)
# The older lines get the inference extra too: the compatibility suite records and replays
# on every line with a recorder (their recorders import the Ollama client, aiohttp, pypdf).
RELEASE_EXTRA_NAMES := postgres,dev,inference
# A release venv whose packages no longer satisfy its pins or those extras (the table or
# the extras changed since it was built) loses its stamp, so that it is built again.
ifneq ($(filter venvs test-compat,$(MAKECMDGOALS)),)
$(foreach r,$(OLD_RELEASES),$(if $(wildcard .venvs/$(r)/.installed),$(shell \
	.venvs/$(r)/bin/python pytest_llamastate/releases/tested.py check $(r) $(RELEASE_EXTRA_NAMES) >&2 \
	|| rm -f .venvs/$(r)/.installed)))
endif

# Venvs are built by uv (installed once by pip, in .venvs/uv): the same pins pip would be
# given, resolved and unpacked from one download cache shared by all nine venvs, in a
# fraction of pip's time (building them was a third of `make test` on a fresh machine).
# UV_NATIVE_TLS: the system's CA bundle, as pip uses it here (PyPI behind a TLS proxy).
UV := .venvs/uv/bin/uv
export UV_NATIVE_TLS := 1
# Bytecode compiled at install, as pip does and uv does not by default: where
# PYTHONDONTWRITEBYTECODE is set (CI containers, this machine) no process would ever write
# it, and each of the suite's hundreds of processes that import a stack compiled it again
# (CPU to import the library client: llama-stack 0.7.3 6.2 s without, 3.8 s with; OGX
# 1.5 12 s and 7 s).
export UV_COMPILE_BYTECODE := 1
# $(call venv,DIR,PYTHON,WHAT TO INSTALL): a fresh venv with pip in it, as users' have.
define venv
	rm -rf $(1)
	$(UV) venv -q --seed -p "$(2)" $(1)
	$(UV) pip install -q -p $(1)/bin/python $(3)
	touch $(1)/.installed
endef

$(UV):
	python3 -m venv .venvs/uv
	.venvs/uv/bin/python -m pip install -q 'uv>=0.9,<1'

STACK_EXTRAS := -e '.[stack,postgres,dev,docs,inference]'
OGX_EXTRAS := -e '.[ogx,postgres,dev,inference]'
RELEASE_EXTRAS = -e '.[$(RELEASE_EXTRA_NAMES)]' $(shell python3 pytest_llamastate/releases/tested.py pins $*)
RELEASE_PYTHON = $$(.ci/find-python $(shell python3 pytest_llamastate/releases/tested.py python $*))

$(STAMP): pyproject.toml | $(UV)
	$(call venv,$(VENV),$$(.ci/find-python),$(STACK_EXTRAS))

$(OGX_STAMP): pyproject.toml | $(UV)
	$(call venv,$(OGX_VENV),$$(.ci/find-python),$(OGX_EXTRAS))

# `make -j4 venvs` builds them four at a time (`make test` does).
venvs: $(STAMP) $(OGX_STAMP) $(RELEASE_STAMPS)

.venvs/%/.installed: pyproject.toml | $(UV)
	$(call venv,.venvs/$*,$(RELEASE_PYTHON),$(RELEASE_EXTRAS))

lint: $(STAMP)
	$(VENV)/bin/ruff check pytest_llamastate tests examples bench tools
	$(VENV)/bin/ruff format --check pytest_llamastate tests examples bench tools
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# First, four at a time, what mostly waits on the network (every venv, the container
# image) beside lint and the docs; then the suites one after the other; last the older
# lines, two at a time.
test:
	$(MAKE) -j4 --output-sync=target venvs test-image lint docs
	$(MAKE) test-llama-stack test-ogx test-postgres test-exec
	$(MAKE) -j2 --output-sync=target test-compat

# Three xdist workers on two cores: much of the suite waits (servers and containers
# starting, killed runs, Postgres), and a third worker computes meanwhile.
XDIST ?= -n 3

test-llama-stack: $(STAMP) test-image
	$(VENV)/bin/pytest $(XDIST) tests

# On OGX the tests marked flavor_neutral (the plugin's own machinery: killed runs, xdist,
# locks, a full disk, the restart soak) are deselected: they ran on llama-stack.
test-ogx: $(OGX_STAMP) test-image
	$(OGX_VENV)/bin/pytest $(XDIST) tests

# The container suite's image (tests/container_image.py: debootstrap + pip, no registry),
# built once per machine and again when its recipe changes; its name is printed. First
# .ci/container-setup installs podman, runc and debootstrap where missing (root, apt-get).
# Where the image cannot be built or run, the container tests skip saying why (so `-`:
# not fatal; the reason is printed here too).
test-image: $(STAMP)
	-.ci/container-setup && $(PY) tests/container_image.py

test-postgres: $(STAMP)
	LLAMASTATE_TEST_BACKEND=postgres $(VENV)/bin/pytest $(XDIST) tests

# A server-mode test per feature once more with servers started by the CLI, `llama stack
# run` / `ogx run` (exec): the tests marked exec_too (tests/conftest.py says which and why).
test-exec: $(STAMP) $(OGX_STAMP)
	LLAMASTATE_TEST_SERVER_PROCESS=exec $(VENV)/bin/pytest $(XDIST) tests
	LLAMASTATE_TEST_SERVER_PROCESS=exec $(OGX_VENV)/bin/pytest $(XDIST) tests

# The compatibility suite (tests/compat) on every older tested release, each in its own venv;
# llama-stack 0.7.3 and OGX 1.5 run it with the rest of tests/ above.
# Two lines at a time (`make -j2 test-compat`, as `make test` runs it), each in one process:
# five tests per line pack badly onto two xdist workers, each of which imports the stack.
test-compat: $(COMPAT_RELEASES:%=compat-%)

compat-%: .venvs/%/.installed
	.venvs/$*/bin/pytest -p no:cacheprovider tests/compat

# The documentation site, strictly: a broken link, a missing page or a failing reference
# generator fails. Its examples run in the suite (tests/test_docs.py), on both flavors.
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict --site-dir site

demo: $(STAMP)
	$(VENV)/bin/pytest -v examples

bench: $(STAMP)
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) $(OGX_VENV) .venvs .pytest_cache .mypy_cache .ruff_cache site
