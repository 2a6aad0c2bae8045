"""Real MCP tools from plain Python functions: a server per function set, and a lazy seed.

A test of an agent needs a toolgroup whose tools exist. Writing, starting, port-managing and
stopping an MCP server is the same sixty lines in every suite, so the plugin serves the
functions itself: the installed ``mcp`` package's FastMCP (mcp 1.x; ``MCPServer`` in mcp
2.x, which OGX needs) over streamable HTTP (and SSE for old clients), in a thread of this
process, so the functions run here and every call they get is recorded.

Markers are evaluated when a test module is imported, long before any server should run,
so :func:`mcp_tools` returns a :class:`~.seeds.LazySeed`: checked at collection, turned
into a ``ToolgroupSeed`` with the server's URL only when a store is made. Each distinct
function list gets one server per process (per xdist worker), shared by every test that
seeds it and started again if it died.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ..releases.install import install_command
from .seeds import LazySeed, SeedError, ToolgroupSeed

__all__ = [
    "McpCall",
    "McpServer",
    "McpTools",
    "McpToolsError",
    "from_seed_entry",
    "mcp_tools",
    "stop_shared_servers",
]

#: Seconds a server may take to start answering.
_START_TIMEOUT = 10.0


class McpToolsError(SeedError):
    """Functions that cannot become MCP tools, or a tool server that did not start."""


@dataclass(frozen=True)
class McpCall:
    """One ``tools/call`` a server received: the tool's name and its arguments as sent."""

    name: str
    arguments: dict[str, Any]


def _describe(fn: object) -> str:
    module, name = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    return f"{module}.{name}" if module and name else repr(fn)


def _problem(fn: object) -> str | None:
    """Why ``fn`` cannot become a tool whose schema says what to send, or ``None``.

    FastMCP accepts more than it can describe: a parameter without a type hint becomes a
    string, ``*args`` a single required argument; an agent calling such a tool sends the
    wrong thing. Those are refused here, before FastMCP's own checks.
    """
    if not inspect.isfunction(fn):
        return f"not a Python function ({type(fn).__name__}); wrap it in a def"
    if fn.__name__ == "<lambda>":
        return "a lambda has no name to be the tool's; use def"
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            return f"*{param.name}/**{param.name}: a tool's arguments must be named parameters"
        if param.annotation is param.empty:
            return (
                f"parameter {param.name!r} has no type hint (FastMCP would describe it as a "
                "string); annotate it"
            )
    return None


def check_functions(functions: Sequence[object], where: str) -> None:
    """Refuse a function list that cannot be served: errors name ``where`` and the function."""
    if not functions:
        raise McpToolsError(f"{where}: no functions to serve as tools")
    seen: dict[str, object] = {}
    fastmcp = _fastmcp()
    for fn in functions:
        if (problem := _problem(fn)) is not None:
            raise McpToolsError(f"{where}: {_describe(fn)} cannot be a tool: {problem}")
        name = getattr(fn, "__name__", "")
        if name in seen:
            raise McpToolsError(
                f"{where}: two tools named {name!r} ({_describe(seen[name])}, {_describe(fn)})"
            )
        seen[name] = fn
        try:
            fastmcp.tool_class.from_function(fn)
        except Exception as exc:  # FastMCP's own reasons, whatever their type
            raise McpToolsError(
                f"{where}: {_describe(fn)} cannot be a tool: FastMCP refused it "
                f"({type(exc).__name__}: {exc})"
            ) from None


@dataclass(frozen=True)
class _FastMCP:
    server_class: type[Any]
    tool_class: type[Any]


def _fastmcp() -> _FastMCP:
    """The installed mcp's server and tool classes: ``FastMCP`` in 1.x, ``MCPServer`` in 2.x."""
    try:
        try:
            server = importlib.import_module("mcp.server.fastmcp")
            tools = importlib.import_module("mcp.server.fastmcp.tools")
            return _FastMCP(server.FastMCP, tools.Tool)
        except ModuleNotFoundError:
            server = importlib.import_module("mcp.server.mcpserver")
            tools = importlib.import_module("mcp.server.mcpserver.tools")
            return _FastMCP(server.MCPServer, tools.Tool)
    except ModuleNotFoundError as exc:
        raise McpToolsError(
            f"serving MCP tools needs the mcp package ({exc.name} missing): "
            f"{install_command('stack')} (or [ogx])"
        ) from None


@contextmanager
def _root_logging_kept() -> Iterator[None]:
    """FastMCP's constructor calls ``logging.basicConfig``; a test's logging stays its own."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        root.handlers[:], root.level = handlers, level


def _app(functions: Sequence[Callable[..., Any]], calls: list[McpCall]) -> Any:
    """A streamable-HTTP app serving ``functions``, recording each call into ``calls``.

    Calls are recorded where the server dispatches them (``call_tool``, the same name in
    mcp 1.x and 2.x): the arguments as the client sent them, also for calls that fail.
    """
    fastmcp = _fastmcp()

    class Recording(fastmcp.server_class):  # type: ignore[misc, name-defined]
        async def call_tool(self, name: str, arguments: dict[str, Any], *a: Any, **k: Any) -> Any:
            calls.append(McpCall(name, dict(arguments)))
            return await super().call_tool(name, arguments, *a, **k)

    with _root_logging_kept():
        server = Recording("pytest-llamastate", log_level="WARNING")
    for fn in functions:
        server.add_tool(fn)
    return _both_transports(server.streamable_http_app(), server.sse_app())


def _both_transports(streamable: Any, sse: Any) -> Any:
    """One endpoint (``/mcp``) for the MCP clients of every release: streamable HTTP, and
    the older SSE transport for llama-stack up to 0.2.15, whose client speaks nothing else.

    An SSE client opens the endpoint with a ``GET`` and no ``mcp-session-id`` (a
    streamable-HTTP client's ``GET`` always carries one) and posts to ``/messages/``.
    """

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers", ()))
            opens_sse = scope["method"] == "GET" and b"mcp-session-id" not in headers
            if scope["path"] == "/mcp" and opens_sse:
                scope = {**scope, "path": "/sse"}
            if scope["path"] in ("/sse", "/messages/"):
                await sse(scope, receive, send)
                return
        await streamable(scope, receive, send)

    return app


@dataclass
class McpServer:
    """An MCP server serving ``functions`` on a free 127.0.0.1 port, in a thread.

    ``url`` is the endpoint to register (``http://127.0.0.1:<port>/mcp``); ``calls`` lists
    what it was asked to do, oldest first. ``start()`` after the server died serves on the
    same port when it is still free, so URLs already written into stores keep working.
    """

    functions: tuple[Callable[..., Any], ...]
    calls: list[McpCall] = field(default_factory=list)
    _port: int | None = field(default=None, repr=False)
    _server: Any = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _error: BaseException | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        check_functions(self.functions, "llama_mcp_server")

    @property
    def names(self) -> list[str]:
        return [fn.__name__ for fn in self.functions]

    @property
    def url(self) -> str:
        if self._port is None:
            raise McpToolsError(f"the MCP server for {', '.join(self.names)} is not started")
        return f"http://127.0.0.1:{self._port}/mcp"

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._server.should_exit

    def start(self) -> McpServer:
        if self.alive:
            return self
        import uvicorn

        sock = self._bind()
        self._error = None
        config = uvicorn.Config(
            _app(self.functions, self.calls),
            log_level="warning",
            # The streamable-HTTP session manager starts in the app's lifespan.
            lifespan="on",
            # A client holding a stream open must not stall a test's teardown.
            timeout_graceful_shutdown=1,
        )
        self._server = server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._serve, args=(sock,), name=f"llamastate-mcp-{self._port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                error = self._error
                reason = f"{type(error).__name__}: {error}" if error else "no answer in time"
                raise McpToolsError(
                    f"the MCP server for {', '.join(self.names)} did not start on port "
                    f"{self._port}: {reason}"
                )
            time.sleep(0.01)
        return self

    def _bind(self) -> socket.socket:
        """The previous port if free (a restart keeps its URL), else a new one."""
        for port in ([self._port] if self._port else []) + [0]:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()
                continue
            self._port = int(sock.getsockname()[1])
            return sock
        raise McpToolsError("could not bind a port on 127.0.0.1 for an MCP server")

    def _serve(self, sock: socket.socket) -> None:
        try:
            asyncio.run(self._server.serve(sockets=[sock]))
        except BaseException as exc:  # reported by start(); a thread has no one else to tell
            self._error = exc
        finally:
            sock.close()

    def stop(self) -> None:
        """Stop serving; safe to call twice. ``calls`` stays readable."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._server.should_exit = True
            thread.join(timeout=10)

    def __enter__(self) -> McpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


#: Session servers of this process, one per distinct function list.
_shared: dict[tuple[Callable[..., Any], ...], McpServer] = {}
_shared_lock = threading.Lock()


def stop_shared_servers() -> None:
    """Session end: stop every server :class:`McpTools` seeds started in this process."""
    with _shared_lock:
        for server in _shared.values():
            server.stop()
        _shared.clear()


@dataclass(frozen=True, eq=False)
class McpTools(LazySeed):
    """Seed ``toolgroup_id`` with ``functions`` served as MCP tools (see :func:`mcp_tools`)."""

    toolgroup_id: str
    functions: tuple[Callable[..., Any], ...]
    #: Checked once: each test's seeds are parsed again, and FastMCP's check costs ms.
    _checked: bool = field(default=False, init=False, repr=False)

    def check(self) -> None:
        if self._checked:
            return
        if not isinstance(self.toolgroup_id, str) or not self.toolgroup_id.startswith("mcp::"):
            raise McpToolsError(
                f"mcp_tools({self.toolgroup_id!r}, ...): the toolgroup id must start with "
                "'mcp::' (the model-context-protocol provider serves it)"
            )
        check_functions(self.functions, f"mcp_tools({self.toolgroup_id!r})")
        object.__setattr__(self, "_checked", True)

    @property
    def server(self) -> McpServer:
        """This process's server for these functions, started (again) if not running."""
        with _shared_lock:
            server = _shared.get(self.functions)
            if server is None:
                server = _shared[self.functions] = McpServer(self.functions)
            return server.start()

    def resolve(self) -> ToolgroupSeed:
        return ToolgroupSeed(self.toolgroup_id, mcp_endpoint=self.server.url)

    def as_dict(self) -> dict[str, Any]:
        return {"toolgroup_id": self.toolgroup_id, "tools": [_describe(f) for f in self.functions]}


def mcp_tools(toolgroup_id: str, *functions: Callable[..., Any]) -> McpTools:
    """A seed for ``toolgroup_id`` whose tools are ``functions``, served for real.

    Use it wherever a seed goes (``@pytest.mark.llama_toolgroups(mcp_tools("mcp::calc",
    add))``, a ``llama_toolgroups`` override, ``llama_store_factory.mktemp(seeds=...)``).
    Each function's name, type hints and docstring become the tool's name, input schema
    and description, as FastMCP makes them. Nothing starts until a store is made.
    """
    return McpTools(toolgroup_id, tuple(functions))


def _import_function(path: object, where: str) -> Callable[..., Any]:
    if not isinstance(path, str) or path.count(":") != 1:
        raise McpToolsError(f"{where}: {path!r} is not an import path like 'mypkg.tools:add'")
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise McpToolsError(f"{where}: cannot import {module_name!r} for {path!r}: {exc}") from None
    fn: object = module
    for part in attribute.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise McpToolsError(f"{where}: {module_name!r} has no {attribute!r} (from {path!r})")
    if not callable(fn):
        raise McpToolsError(f"{where}: {path!r} is not a function")
    return fn


def from_seed_entry(value: object) -> object:
    """A seed file's ``{toolgroup_id: ..., tools: ["module:function", ...]}`` as
    :class:`McpTools`; any other entry unchanged, for ``seeds`` to parse."""
    if not isinstance(value, Mapping) or "tools" not in value:
        return value
    unknown = sorted(set(map(str, value)) - {"toolgroup_id", "tools"})
    where = f"seed {dict(value)!r}"
    if unknown:
        raise McpToolsError(
            f"{where}: unknown key(s) {', '.join(unknown)}; a 'tools' seed has only "
            "toolgroup_id and tools"
        )
    tools = value["tools"]
    if not isinstance(tools, list):
        raise McpToolsError(f"{where}: tools must be a list of 'module:function' paths")
    return McpTools(
        str(value.get("toolgroup_id", "")), tuple(_import_function(p, where) for p in tools)
    )
