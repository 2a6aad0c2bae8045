from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


def pytest_configure(config: pytest.Config) -> None:
    """Import the installed stack once, in this (outer) process.

    pytester's in-process runs drop every module imported during the run; re-importing
    the stack next time mixes fresh modules with compiled extensions that cannot be
    re-initialised (OGX's SQLAlchemy use then fails with "'InternalTraversal' object is
    not callable"). Imported here, the modules outlive each run, which is also faster.
    So is everything a stack on the default config imports beyond the client.
    """
    from pytest_llamastate.flavor import detect, import_quietly

    flavor = detect()
    if flavor.installed():
        import_quietly(flavor.library_module)
        # The default config's files provider stores through SQLAlchemy, which the
        # library client alone does not import.
        import_quietly(f"{flavor.package}.core.storage.sqlstore.sqlalchemy_sqlstore")
        import_quietly(f"{flavor.package}.providers.inline.files.localfs.files")


@pytest.fixture(scope="session")
def mcp_url() -> Iterator[str]:
    """A real MCP server with one tool, ``add``, for the whole session."""
    from mcp_server import running_mcp_server

    with running_mcp_server("add") as url:
        yield url


@pytest.fixture(scope="session")
def mcp_url_2() -> Iterator[str]:
    """A second MCP server, with the tool ``multiply``."""
    from mcp_server import running_mcp_server

    with running_mcp_server("multiply") as url:
        yield url
