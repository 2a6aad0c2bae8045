"""The fixtures: each wires objects from the modules below to one pytest scope.

Kept apart from the hooks (``plugin``) the way pytest-django does: what a fixture does is
decided by the objects it builds; when it happens is pytest's business.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ..releases import installed_versions
from ..stack import LlamaStack, LlamaStackFactory, StackError
from ..stack.state_templates import TemplateError
from ..state import environ
from ..state.mcptools import McpServer, McpToolsError
from ..state.persistent import Lease, PersistentStoreError, fingerprint
from ..state.registry import RegistrySnapshot, StoreCorruptError
from ..state.seed_rows import BuiltTemplate
from ..state.seeds import LazySeed, Seed, SeedError, merge_seeds, parse_seeds, resolve_seeds
from ..state.stackconfig import StackConfig, StackConfigError
from ..state.store import LlamaStore, os_problem
from ..state.store_factory import LlamaStoreFactory
from ..storage.base import StorageError
from .session import item_state, marker_seeds_key, persistent_key, session_state, template_key

__all__ = [
    "llama_mcp_server",
    "llama_stack",
    "llama_stack_config",
    "llama_stack_factory",
    "llama_store",
    "llama_store_factory",
    "llama_toolgroups",
    "ogx_stack",
]


@contextmanager
def _as_test_error(
    *errors: type[Exception], doing: str = "", about: Path | None = None
) -> Iterator[None]:
    """Turn our own errors into a test error showing only their message; with ``doing``,
    OS errors too (a full disk, a read-only one, permissions, too many open files), as
    ``<doing>: <path>: <cause>`` (``about`` when the error names no path): the test
    errors, the next one runs.

    The failure is raised ``from None``: inside a context manager's ``__exit__`` the
    error is still being handled even outside the ``except`` block, so the report would
    add "During handling of the above exception" and the message twice.
    """
    try:
        yield
    except errors as exc:
        problem = str(exc)
    except OSError as exc:
        if not doing:
            raise
        problem = f"{doing}: {os_problem(exc, about)}"
    else:
        return
    raise pytest.fail.Exception(problem, pytrace=False) from None


def _config_text(config: Path | str | StackConfig) -> str:
    if isinstance(config, StackConfig):
        return config.text
    try:
        return Path(config).read_text(encoding="utf-8")
    except OSError:
        return str(config)


@pytest.fixture(scope="session")
def llama_store_factory(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> LlamaStoreFactory:
    """Session-wide maker of stores, for module- or session-scoped state of your own."""
    factory = session_state(request.config).factory
    factory.set_default_base(lambda: tmp_path_factory.getbasetemp() / "llamastate")
    return factory


@pytest.fixture
def llama_toolgroups(request: pytest.FixtureRequest) -> list[Seed]:
    """The toolgroups this test's store starts with; override it to compute your own.

    The ``llama_toolgroups_file`` seeds, then the ``llama_toolgroups`` markers of the
    module, class and test; a closer seed replaces a farther one with the same id.
    """
    return list(
        merge_seeds(
            session_state(request.config).settings.seeds,
            request.node.stash.get(marker_seeds_key, ()),
        )
    )


@pytest.fixture
def llama_store(
    request: pytest.FixtureRequest,
    llama_store_factory: LlamaStoreFactory,
    llama_toolgroups: list[Seed],
    llama_stack_config: Path | str | StackConfig,
) -> Iterator[LlamaStore]:
    """A fresh Llama Stack state folder for this test, active while it runs.

    ``SQLITE_STORE_DIR`` and the other state roots point into it from setup to teardown;
    afterwards every variable is exactly as before. It holds the ``llama_toolgroups``
    seeds before the test starts. Kept after a failure (see ``llama_keep_store``) and
    named in the failure report. Under ``@pytest.mark.persistent`` it is the named
    persistent store instead, locked for this test. Under
    ``@pytest.mark.llama_template(name)`` it starts as a copy of that built template.
    """
    istate = item_state(request.node)
    name = request.node.stash.get(persistent_key, None)
    lease: Lease | None = None
    hook = request.node.ihook
    doing = "make the test's store" if name is None else f"open persistent store {name!r}"
    with _as_test_error(
        SeedError,
        PersistentStoreError,
        StorageError,
        TemplateError,
        StackConfigError,
        StoreCorruptError,
        doing=f"llama_store: cannot {doing}",
    ):
        wanted = list(llama_toolgroups)
        hook.pytest_llamastate_seeds(seeds=wanted, request=request)
        seeds = parse_seeds(wanted, "llama_toolgroups")
        if name is None:
            template = _built_template(request, llama_stack_config)
            store = llama_store_factory.mktemp(
                request.node.name, label=request.node.nodeid, seeds=seeds, template=template
            )
            istate.stores.append(store)
        else:
            lease = session_state(request.config).persistent.acquire(
                name,
                fingerprint=fingerprint(
                    installed_versions(), _config_text(llama_stack_config), seeds
                ),
                seeds=resolve_seeds(seeds),
                templates=llama_store_factory.templates,
                refresh=resolve_seeds(s for s in seeds if isinstance(s, LazySeed)),
            )
            istate.leases.append(lease)
            store = lease.store
    try:
        with _as_test_error(StoreCorruptError):
            # What the test changes is reported on failure: remember where it started.
            istate.initial[store.path] = (
                store.snapshot()
                if lease is not None or seeds or store.template
                else RegistrySnapshot()
            )
        hook.pytest_llamastate_store_created(store=store, request=request)
        istate.activations.append((dict(store.env), environ.save(store.env)))
        with store.activate():
            yield store
    finally:
        if lease is not None:
            with _as_test_error(
                PersistentStoreError, doing=f"llama_store: cannot check persistent store {name!r}"
            ):
                try:
                    lease.release()
                finally:
                    hook.pytest_llamastate_store_released(
                        store=store, kept=True, nodeid=request.node.nodeid
                    )


def _built_template(
    request: pytest.FixtureRequest, config: Path | str | StackConfig
) -> BuiltTemplate | None:
    """The template of the test's ``llama_template`` marker, built on first use (on the
    config the test's stack runs, before that stack starts: one library stack per process)."""
    template = request.node.stash.get(template_key, None)
    if template is None:
        return None
    state, istate = session_state(request.config), item_state(request.node)
    parsed = config if isinstance(config, StackConfig) else state.stacks.load_config(config)
    try:
        built, event = state.state_templates.get(template, parsed, request.node.nodeid)
    finally:
        # A build's writes to the real homes were judged by the build's own guard check.
        if state.guard is not None:
            istate.guard_mark = state.guard.begin()
    if event is not None:
        istate.templates.append(event)
    return built


@pytest.fixture
def llama_stack_config(pytestconfig: pytest.Config) -> Path | str | StackConfig:
    """The run config ``llama_stack`` starts; override it to use your own.

    Returns ``--llama-stack-config`` / ini ``llama_stack_config`` or the plugin's offline
    ``minimal.yaml``. Every path the config writes must resolve inside the test's store.
    """
    return session_state(pytestconfig).settings.stack_config


@pytest.fixture(scope="session")
def llama_stack_factory(request: pytest.FixtureRequest) -> Iterator[LlamaStackFactory]:
    """Session-wide starter of stacks, for module- or session-scoped stacks of your own."""
    factory = session_state(request.config).stacks
    yield factory
    factory.close_all()


@pytest.fixture
def llama_stack(
    request: pytest.FixtureRequest,
    llama_store: LlamaStore,
    llama_stack_factory: LlamaStackFactory,
    llama_stack_config: Path | str | StackConfig,
) -> Iterator[LlamaStack]:
    """A real Llama Stack running on this test's store, stopped after the test.

    Library mode (default) runs it in-process; ``--llama-stack-mode=server`` runs
    ``llama stack run`` (OGX: ``ogx run``) as a child process (``base_url`` is set, its
    log is attached to a failing test's report). Which of the two: ``llama_flavor``.
    """
    istate = item_state(request.node)
    try:
        with _as_test_error(
            StackError, StackConfigError, doing="llama_stack: cannot start", about=llama_store.path
        ):
            config = (
                llama_stack_config
                if isinstance(llama_stack_config, StackConfig)
                else llama_stack_factory.load_config(llama_stack_config)
            )
            data = copy.deepcopy(dict(config.data))
            request.node.ihook.pytest_llamastate_stack_config(
                config=data, store=llama_store, request=request
            )
            stack = llama_stack_factory.start(
                llama_store, config=config.replace_data(data), label=request.node.nodeid
            )
    except pytest.fail.Exception:
        if llama_store.log_path.is_file():
            istate.failed_logs.append(llama_store.log_path)
        raise
    istate.stacks.append(stack)
    try:
        yield stack
    finally:
        stack.close()


@pytest.fixture
def llama_mcp_server() -> Iterator[Callable[..., McpServer]]:
    """Start an MCP server of this test's own: ``server = llama_mcp_server(add, multiply)``.

    The functions are served as tools on a free 127.0.0.1 port (per process, so xdist
    workers never clash); ``server.url`` is the endpoint to register, ``server.calls``
    what it was asked, for asserting what an agent did. Stopped at teardown. A function
    that cannot be a tool fails the test, naming it and the reason.
    """
    servers: list[McpServer] = []

    def start(*functions: Callable[..., object]) -> McpServer:
        with _as_test_error(McpToolsError):
            server = McpServer(tuple(functions))
            servers.append(server)
            server.start()
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def ogx_stack(llama_stack: LlamaStack) -> LlamaStack:
    """``llama_stack`` by its OGX name: the same stack object, for suites that say OGX."""
    return llama_stack
