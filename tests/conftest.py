from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


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
