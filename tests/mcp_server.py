"""A tiny real MCP server for tests: FastMCP over streamable HTTP on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

try:  # mcp 1.x (llama-stack 0.7)
    from mcp.server.fastmcp import FastMCP
except ModuleNotFoundError:  # mcp 2.x (ogx) renamed it
    from mcp.server.mcpserver import MCPServer as FastMCP  # type: ignore[no-redef]


@contextmanager
def running_mcp_server(tool_name: str = "add") -> Iterator[str]:
    """Serve one tool, ``tool_name(a, b) -> a + b``; yields the endpoint URL."""
    mcp = FastMCP("pytest-llamastate-tests", log_level="WARNING")

    def add(a: int, b: int) -> int:
        return a + b

    mcp.add_tool(add, name=tool_name, description=f"{tool_name}: add two integers")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # lifespan="on": the streamable-HTTP session manager starts in the app's lifespan.
    server = uvicorn.Server(
        uvicorn.Config(mcp.streamable_http_app(), log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test MCP server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
