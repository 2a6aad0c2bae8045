"""Running a real Llama Stack (or OGX) on a store: in-process (library client) or as a server.

Both modes share one handle, :class:`LlamaStack`, so a test reads the same either way,
and both flavors share one code path: what differs is data of a :class:`~.flavor.Flavor`.
This module owns the traps of running stacks under a test runner:

- library mode: storage backends and the toolgroup tool index are process globals, so at
  most one library stack is live per process and the globals are reset between stacks;
  construction prints the config, replaces the root logging handlers, leaks an event
  loop and fails under ``-W error`` unless shielded; ``*_TEST_INFERENCE_MODE``
  silently turns on the stack's recorder; OGX's client registers an ``atexit`` hook that
  would keep every stack of the session alive until exit;
- server mode: a child process in its own process group, on a port no other worker
  holds, ready when ``/v1/health`` says so, killed as a group, its log kept in the store.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from filelock import FileLock, Timeout

from .flavor import FLAVORS, Flavor, detect, import_quietly
from .registry import RegistryFormat, ToolgroupRecord, installed_format, read_entries, write_entries
from .seeds import SeedError, ToolgroupSeed
from .stackconfig import StackConfig
from .store import LlamaStore

__all__ = [
    "STACK_MODES",
    "LlamaStack",
    "LlamaStackFactory",
    "StackError",
    "StackMode",
    "StackNotInstalledError",
]

StackMode = Literal["library", "server"]
STACK_MODES: tuple[StackMode, ...] = ("library", "server")

#: Variables that change what a stack does to its state; unset while one starts.
_UNSET_WHILE_STARTING = tuple(flavor.inference_mode_var for flavor in FLAVORS)
_LOG_TAIL_LINES = 40


class StackError(RuntimeError):
    """A stack could not start, stop or do what was asked; the message says why."""


class StackNotInstalledError(StackError):
    """Neither llama-stack nor ogx is importable."""


@contextlib.contextmanager
def _unset(names: tuple[str, ...]) -> Iterator[None]:
    saved = {n: os.environ.pop(n) for n in names if n in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _log_tail(path: Path) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-_LOG_TAIL_LINES:])


# ---------------------------------------------------------------------------------------
# library mode


_live_library: LlamaStack | None = None
#: Every running stack of this process, by store folder.
_running: dict[Path, LlamaStack] = {}


def running_stack(store_path: Path) -> LlamaStack | None:
    """The stack of this process running on ``store_path``, if any."""
    return _running.get(store_path)


def _reset_library_globals(flavor: Flavor) -> None:
    """Clear what one in-process stack leaves for the next: the class-level tool index.

    ``Stack.initialize`` re-registers the storage backends itself; the MCP transport
    cache is keyed by URL, and a later test may reuse a port for another server.
    """
    toolgroups = import_quietly(f"{flavor.package}.core.routing_tables.toolgroups")
    mcp = import_quietly(f"{flavor.package}.providers.utils.tools.mcp")
    toolgroups.ToolGroupsRoutingTable.toolgroups_to_tools.clear()
    toolgroups.ToolGroupsRoutingTable.tool_to_toolgroup.clear()
    mcp.protocol_cache.clear()


def _close_storage(flavor: Flavor) -> None:
    """Close the databases a stack that failed half-way left open in process globals.

    OGX opens its SQL store before a bad provider stops the start, and its client then
    stops its loop without shutting the stack down; the next start would drop the open
    connection unclosed (a warning at a random later point). Best effort, bounded.
    """
    kvstore = import_quietly(f"{flavor.package}.core.storage.kvstore.kvstore")
    sqlstore = import_quietly(f"{flavor.package}.core.storage.sqlstore.sqlstore")

    async def close() -> None:
        await kvstore.shutdown_kvstore_backends()
        await sqlstore.shutdown_sqlstore_backends()

    with contextlib.suppress(Exception):
        asyncio.run(asyncio.wait_for(close(), 10))


def _new_library_client(config_path: Path, flavor: Flavor) -> Any:
    try:
        library_client: Any = import_quietly(flavor.library_module)
    except ModuleNotFoundError as exc:
        raise StackNotInstalledError(
            f"{flavor.name} is not installed ({exc.name} missing): {flavor.install_hint}"
        ) from None
    _reset_library_globals(flavor)
    created: list[asyncio.AbstractEventLoop] = []
    new_event_loop = asyncio.new_event_loop

    def tracked_loop() -> asyncio.AbstractEventLoop:
        loop = new_event_loop()
        created.append(loop)
        return loop

    setup_logging = library_client.setup_logging
    # Construction would replace the root logging handlers (caplog stops working), print
    # the whole config, and trip -W error on third-party deprecation warnings.
    library_client.setup_logging = lambda *a, **k: None
    asyncio.new_event_loop = tracked_loop
    os.environ.setdefault("PYTEST_CURRENT_TEST", "pytest-llamastate")
    client = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            client = getattr(library_client, flavor.library_client)(str(config_path))
    finally:
        library_client.setup_logging = setup_logging
        asyncio.new_event_loop = new_event_loop
        if os.environ.get("PYTEST_CURRENT_TEST") == "pytest-llamastate":
            del os.environ["PYTEST_CURRENT_TEST"]
        # Keep client.loop (OGX runs it in a thread); llama-stack ran initialize() on another.
        for loop in created:
            if loop is not getattr(client, "loop", None) and not loop.is_running():
                loop.close()
    return client


def _tool_groups(client: Any, flavor: Flavor) -> Any:
    api = import_quietly(flavor.api_package).Api
    return client.async_client.impls[api.tool_groups]


# ---------------------------------------------------------------------------------------
# server mode

_PORT_LOCKS = Path(tempfile.gettempdir()) / "pytest-llamastate-ports"
_live_servers: set[subprocess.Popen[bytes]] = set()


def _claim_port() -> tuple[int, FileLock]:
    """A free port, held by a file lock so no other pytest worker hands it out too."""
    _PORT_LOCKS.mkdir(exist_ok=True)
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        lock = FileLock(str(_PORT_LOCKS / f"{port}.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            continue
        return port, lock
    raise StackError("could not find a free TCP port on 127.0.0.1")


def _kill_group(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    _live_servers.discard(proc)


@atexit.register
def _kill_leftover_servers() -> None:
    """Last resort (e.g. the run was interrupted before fixture teardown)."""
    for proc in list(_live_servers):
        _kill_group(proc, grace=2.0)


def _server_command(config_path: Path, port: int, flavor: Flavor) -> list[str]:
    beside = Path(sys.executable).with_name(flavor.cli)
    exe = str(beside) if beside.exists() else shutil.which(flavor.cli)
    if exe is None:
        raise StackNotInstalledError(
            f"the `{flavor.cli}` command is not installed: {flavor.install_hint}"
        )
    return [exe, *flavor.run_args, str(config_path), "--port", str(port), *flavor.server_flags]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v1/health", timeout=1) as response:
            return bool(json.load(response).get("status") == "OK")
    except (OSError, ValueError, urllib.error.URLError):
        return False


# ---------------------------------------------------------------------------------------
# the handle


@dataclass
class LlamaStack:
    """A running stack whose every write lands in ``store``.

    ``client`` is the flavor's own client: for llama-stack a ``llama_stack_client``
    client (the library client in library mode, ``LlamaStackClient(base_url)`` in server
    mode), for OGX an ``ogx_client`` one (``OGXAsLibraryClient``, ``OgxClient``).
    """

    store: LlamaStore
    config: StackConfig
    mode: StackMode = "library"
    start_timeout: float = 60.0
    label: str = ""
    flavor: Flavor = field(default_factory=detect)
    client: Any = field(default=None, init=False, repr=False)
    base_url: str | None = field(default=None, init=False)
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _port: tuple[int, FileLock] | None = field(default=None, init=False, repr=False)
    _config_path: Path | None = field(default=None, init=False, repr=False)

    @property
    def log_path(self) -> Path:
        """Where a server's stdout and stderr go (appended across restarts)."""
        return self.store.path / "server.log"

    @property
    def running(self) -> bool:
        return self.client is not None

    def start(self) -> LlamaStack:
        if self.running:
            raise StackError(f"the stack on {self.store.path} is already running")
        self.config.check_paths(self.store.path)
        known = self.config.providers("tool_runtime")
        for seed in self.store.seeds:
            if seed.provider_id not in known:
                raise StackError(
                    f"seeded toolgroup {seed.toolgroup_id!r} names provider "
                    f"{seed.provider_id!r}, which {self.config.path} does not have "
                    f"(tool_runtime providers: {', '.join(known) or 'none'})"
                )
        self._config_path = self.config.write_into(self.store.path)
        self._align_seed_keys()
        with self.store.activate(), _unset(_UNSET_WHILE_STARTING):
            if self.mode == "library":
                self._start_library()
            else:
                self._start_server()
        _running[self.store.path] = self
        return self

    def stop(self) -> None:
        """Stop the stack; safe to call twice."""
        global _live_library
        client, self.client = self.client, None
        _running.pop(self.store.path, None)
        if self.mode == "library":
            if client is not None:
                try:
                    client.shutdown()
                finally:
                    # OGX's atexit hook would keep this whole stack alive until exit.
                    atexit.unregister(client.shutdown)
                    _live_library = None
                    _reset_library_globals(self.flavor)
        else:
            if self._proc is not None:
                _kill_group(self._proc)
                self._proc = None

    def close(self) -> None:
        """Stop and release the port: the handle is done for good."""
        self.stop()
        if self._port is not None:
            self._port[1].release()
            self._port = None

    def restart(self) -> None:
        """Stop and start again on the same store (and port): what soak tests repeat."""
        self.stop()
        self.start()

    def __enter__(self) -> LlamaStack:
        return self if self.running else self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- toolgroups ---------------------------------------------------------------------

    def toolgroups(self) -> list[ToolgroupRecord]:
        """The registered toolgroups, as the stack sees them."""
        if self.mode == "library":
            data = self._run(self._tool_groups().list_tool_groups()).data
            return [ToolgroupRecord.from_value(tg.model_dump(mode="json")) for tg in data]
        # Neither 0.7 nor OGX has an HTTP toolgroup API: the server's registry rows are
        # the truth.
        return self.store.toolgroups()

    def register_toolgroup(
        self,
        toolgroup_id: str,
        *,
        provider_id: str | None = None,
        mcp_endpoint: str | None = None,
        args: Mapping[str, Any] | None = None,
    ) -> None:
        """Register a toolgroup; an ``mcp::`` id or an endpoint defaults to the MCP provider.

        In server mode this writes the registry row and restarts the server (neither 0.7
        nor OGX has an HTTP route for it), so it costs a restart; seed toolgroups for bulk
        set-up.
        """
        try:  # the same defaults and checks as a seed
            seed = ToolgroupSeed(toolgroup_id, provider_id, mcp_endpoint, args)
        except SeedError as exc:
            raise StackError(f"register_toolgroup: {exc}") from None
        provider = str(seed.provider_id)
        known = self.config.providers("tool_runtime")
        if provider not in known:
            raise StackError(
                f"register_toolgroup({toolgroup_id!r}): provider {provider!r} is not in "
                f"{self.config.path} (tool_runtime providers: {', '.join(known) or 'none'})"
            )
        if self.mode == "library":
            url = import_quietly(self.flavor.api_package).URL
            self._run(
                self._tool_groups().register_tool_group(
                    toolgroup_id=toolgroup_id,
                    provider_id=provider,
                    mcp_endpoint=url(uri=mcp_endpoint) if mcp_endpoint else None,
                    args=dict(args) if args is not None else None,
                )
            )
            return
        key, value = self._format().toolgroup_row(toolgroup_id, provider, mcp_endpoint, args)
        self._edit_server_registry({key: value})

    def unregister_toolgroup(self, toolgroup_id: str) -> None:
        if toolgroup_id not in {tg.identifier for tg in self.toolgroups()}:
            raise StackError(f"unregister_toolgroup({toolgroup_id!r}): no such toolgroup")
        if self.mode == "library":
            routing = self._tool_groups()
            self._run(routing.unregister_toolgroup(toolgroup_id))
            # llama-stack (and OGX) leave the group's tools in the class-level index.
            index = type(routing)
            for tool in index.toolgroups_to_tools.pop(toolgroup_id, []):
                if index.tool_to_toolgroup.get(tool.name) == toolgroup_id:
                    del index.tool_to_toolgroup[tool.name]
            return
        self._edit_server_registry({self._format().key("tool_group", toolgroup_id): None})

    def tools(self, toolgroup_id: str | None = None) -> list[dict[str, Any]]:
        """The tools of every toolgroup (or of one), as the stack's list-tools API returns
        them: ``GET /v1/tools`` (OGX: ``/v1/admin/tools``) as plain dicts.

        Library mode calls the handler behind that route directly: OGX 1.5's route fails
        (its admin API is built without the toolgroups dependency), the handler does not.
        """
        if self.mode == "library":
            request = import_quietly(self.flavor.api_package).ListToolsRequest
            data = self._run(self._tool_groups().list_tools(request(toolgroup_id=toolgroup_id)))
            return [tool.model_dump(mode="json") for tool in data.data]
        query = f"?{urllib.parse.urlencode({'toolgroup_id': toolgroup_id})}" if toolgroup_id else ""
        url = f"{self._base_url()}{self.flavor.tools_path}{query}"
        try:
            with urllib.request.urlopen(url, timeout=300) as response:
                return list(json.load(response)["data"])
        except urllib.error.HTTPError as exc:
            body = exc.read().decode(errors="replace")[:500]
            known = self.flavor.tools_route_bug if exc.code == 500 else ""
            raise StackError(
                f"GET {self.flavor.tools_path} failed with HTTP {exc.code}: {body}."
                + (f" This is a known upstream bug: {known}" if known else "")
            ) from None

    # -- internals ----------------------------------------------------------------------

    def _client(self) -> Any:
        if self.client is None:
            raise StackError(f"the stack on {self.store.path} is not running")
        return self.client

    def _base_url(self) -> str:
        self._client()
        assert self.base_url is not None
        return self.base_url

    def _run(self, coro: Any) -> Any:
        return self.flavor.run(self._client().loop, coro)

    def _tool_groups(self) -> Any:
        return _tool_groups(self._client(), self.flavor)

    def _format(self) -> RegistryFormat:
        """How this stack's registry rows are keyed (OGX: under the config's namespace)."""
        try:
            return installed_format(self.flavor, self.config.metadata_namespace)
        except ModuleNotFoundError as exc:
            raise StackNotInstalledError(str(exc)) from None

    def _align_seed_keys(self) -> None:
        """Move seed rows written under another namespace to the one this stack reads.

        Seeds are written when the store is made, for the session's run config; a test
        whose own config names another metadata namespace would not see them on OGX.
        A seed the test has since unregistered has no row anywhere, so stays gone.
        """
        if not self.store.seeds or not self.flavor.namespaced_keys:
            return
        fmt = self._format()
        entries = read_entries(self.store.kvstore_path)
        present = {e.key for e in entries}
        moves: dict[str, str | None] = {}
        for seed in self.store.seeds:
            wanted = fmt.key("tool_group", seed.toolgroup_id)
            if wanted in present:
                continue
            for e in entries:
                if (e.type, e.identifier) == ("tool_group", seed.toolgroup_id):
                    moves[wanted], moves[e.key] = json.dumps(dict(e.value)), None
                    break
        if moves:
            write_entries(self.store.kvstore_path, moves)

    def _start_library(self) -> None:
        global _live_library
        if _live_library is not None:
            raise StackError(
                f"a library stack is already running in this process (store "
                f"{_live_library.store.path}, {_live_library.label or 'no label'}): "
                f"{self.flavor.name} keeps its storage in process globals, so two would share "
                "state. Use one stack per test, stop the other first, or "
                "--llama-stack-mode=server."
            )
        assert self._config_path is not None
        try:
            self.client = _new_library_client(self._config_path, self.flavor)
        except StackNotInstalledError:
            raise
        except Exception as exc:
            _close_storage(self.flavor)
            _reset_library_globals(self.flavor)
            raise StackError(
                f"{self.config.path}: the stack did not start: {type(exc).__name__}: {exc}"
            ) from None
        _live_library = self

    def _start_server(self) -> None:
        assert self._config_path is not None
        if self._port is None:
            self._port = _claim_port()
        port = self._port[0]
        command = _server_command(self._config_path, port, self.flavor)
        url = f"http://127.0.0.1:{port}"
        with self.log_path.open("ab") as log:
            log.write(f"\n--- pytest-llamastate: {' '.join(command)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.store.path,
            )
        _live_servers.add(self._proc)
        deadline = time.monotonic() + self.start_timeout
        while not _healthy(url):
            if self._proc.poll() is not None:
                code = self._proc.returncode
                _kill_group(self._proc)  # reaps it and forgets it
                self._proc = None
                raise StackError(
                    f"the server exited with code {code} during start-up; "
                    f"log {self.log_path}:\n{_log_tail(self.log_path)}"
                )
            if time.monotonic() > deadline:
                _kill_group(self._proc)
                self._proc = None
                raise StackError(
                    f"the server was not ready within {self.start_timeout:g}s "
                    f"(llama_stack_start_timeout); log {self.log_path}:\n"
                    f"{_log_tail(self.log_path)}"
                )
            time.sleep(0.1)
        try:
            client_module = import_quietly(self.flavor.client_package)
        except ModuleNotFoundError as exc:
            raise StackNotInstalledError(
                f"{exc.name} is not installed: {self.flavor.install_hint}"
            ) from None
        client_class = getattr(client_module, self.flavor.client_class)
        self.base_url = url
        self.client = client_class(base_url=url)

    def _edit_server_registry(self, rows: Mapping[str, str | None]) -> None:
        was_running = self.running
        self.stop()
        write_entries(self.store.kvstore_path, rows)
        if was_running:
            self.start()

    def log_tail(self) -> str:
        return _log_tail(self.log_path)


@dataclass
class LlamaStackFactory:
    """Starts stacks for any scope; ``llama_stack`` uses it, and so can your fixtures.

    A module-scoped stack (shared state between the module's tests, one start-up)::

        @pytest.fixture(scope="module")
        def shared_stack(llama_store_factory, llama_stack_factory):
            store = llama_store_factory.mktemp("shared")
            with llama_stack_factory.start(store) as stack:
                yield stack
    """

    mode: StackMode
    config_path: Path
    start_timeout: float = 60.0
    #: Which stack to run (``llama_flavor``); detected when not given.
    flavor: Flavor = field(default_factory=detect)
    _configs: dict[Path, StackConfig] = field(default_factory=dict, repr=False)
    _live: list[LlamaStack] = field(default_factory=list, repr=False)

    def load_config(self, path: Path | str | None = None) -> StackConfig:
        """Parse a config once per session (the default one when ``path`` is None)."""
        resolved = Path(path or self.config_path).absolute()
        if resolved not in self._configs:
            self._configs[resolved] = StackConfig.load(resolved)
        return self._configs[resolved]

    def start(
        self,
        store: LlamaStore,
        *,
        config: Path | str | StackConfig | None = None,
        mode: StackMode | None = None,
        label: str = "",
    ) -> LlamaStack:
        """Start a stack on ``store``; stop it with ``close()`` or a ``with`` block."""
        stack_config = config if isinstance(config, StackConfig) else self.load_config(config)
        stack = LlamaStack(
            store, stack_config, mode or self.mode, self.start_timeout, label, self.flavor
        )
        try:
            stack.start()
        except BaseException:
            stack.close()  # a server half-started, a claimed port: nothing may outlive it
            raise
        self._live = [s for s in self._live if s.running] + [stack]
        return stack

    def close_all(self) -> None:
        """Stop every stack this factory started that is still running (session end)."""
        while self._live:
            self._live.pop().close()
