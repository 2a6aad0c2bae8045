"""The fixtures: each wires objects from the modules below to one pytest scope.

Kept apart from the hooks (``plugin``) the way pytest-django does: what a fixture does is
decided by the objects it builds; when it happens is pytest's business.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ..stack import LlamaStack, LlamaStackFactory
from ..state.mcptools import McpServer, McpToolsError
from ..state.seeds import Seed, merge_seeds
from ..state.stackconfig import StackConfig
from ..state.store import LlamaStore
from ..state.store_factory import LlamaStoreFactory
from .fixture_errors import as_test_error
from .session import marker_seeds_key, session_state
from .stack_setup import start_stack
from .store_setup import StoreSetup

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
    setup = StoreSetup(request, llama_store_factory, llama_toolgroups, llama_stack_config)
    with setup.active() as store:
        yield store


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
    stack = start_stack(request, llama_store, llama_stack_factory, llama_stack_config)
    try:
        yield stack
    finally:
        stack.close(wait=False)  # nothing after this test changes its store's journal


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
        with as_test_error(McpToolsError):
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
