"""The server way: a child process serving HTTP on a port no other worker holds.

Two kinds of process serve the same app: ``fork`` (default where the platform can) forks
it from a zygote that imported the stack once (``forkserver``), ``exec`` runs the CLI
(``llama stack run``) through ``launcher.py``. Either way the child leads its own process
group (teardown kills the group), dies with this process even on SIGKILL (an atexit
handler does not run then), and writes its log into the store. A start-up failure is
reported by the line the stack itself ended on.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

from filelock import BaseFileLock

from ..process.lifetime import NoFreePortError, claim_port, kill_group, servers_temp
from ..releases import Flavor, import_quietly, server_shortcuts
from ..state.registry import ToolgroupRecord
from ..state.seeds import ToolgroupSeed
from . import shortcuts
from .backend import StackError, StackNotInstalledError, StartSpec
from .forkserver import ChildExitedError, ForkServer, ForkServerError

__all__ = [
    "SERVER_PROCESSES",
    "ExecChild",
    "ServerBackend",
    "ServerProcess",
    "failure_line",
    "log_tail",
    "mark_start",
    "warm_up",
]

ServerProcess = Literal["fork", "exec"]
SERVER_PROCESSES: tuple[ServerProcess, ...] = ("fork", "exec")

_LAUNCHER = Path(__file__).with_name("launcher.py")
_LOG_TAIL_LINES = 40
_START_MARK = "--- pytest-llamastate: "
#: The last line of a traceback: ``ValueError: ...``, ``pkg.mod.SomeError: ...``.
_EXCEPTION_LINE = re.compile(
    r"^(?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception|Exit|Interrupt|Failure)\b(?::.*)?$"
)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def mark_start(log: Path, kind: str, command: list[str]) -> None:
    """Begin a start's part of the (appended) log: what ran, and where its lines begin."""
    with log.open("ab") as out:
        out.write(f"\n{_START_MARK}{kind}: {' '.join(command)}\n".encode())


def _run_lines(log: Path) -> list[str]:
    """The lines of ``log`` written by the latest start (a log is appended to)."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    starts = [i for i, line in enumerate(lines) if line.startswith(_START_MARK)]
    return [_ANSI.sub("", line) for line in lines[starts[-1] + 1 if starts else 0 :]]


def failure_line(log: Path) -> str:
    """What the stack said last: its final exception line, or else its last line.

    OGX logs through rich, which indents a traceback (and its last line) in a frame.
    """
    lines = [line.strip(" \t│|") for line in _run_lines(log) if line.strip(" \t│|")]
    for line in reversed(lines):
        if _EXCEPTION_LINE.match(line):
            return line
    return lines[-1] if lines else "(the log is empty)"


def log_tail(log: Path) -> str:
    lines = _run_lines(log)
    return "\n".join(lines[-_LOG_TAIL_LINES:]) if lines else "(no log)"


class _Child(Protocol):
    """A server process, however it was started."""

    pid: int

    def poll(self) -> int | None: ...
    def wait_ready(self, timeout: float) -> None: ...
    def stop(self, grace: float = 10.0, wait: bool = True) -> int | None: ...


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v1/health", timeout=1) as response:
            return bool(json.load(response).get("status") == "OK")
    except (OSError, ValueError, urllib.error.URLError):
        return False


class ExecChild:
    """A command through the launcher (``llama stack run``, ``podman run``); ready when
    ``/v1/health`` says so. ``temp``: its ``TMPDIR`` is a folder of its own
    (``lifetime.servers_temp``), removed once it has stopped."""

    def __init__(
        self, command: list[str], url: str, log: Path, cwd: Path, temp: bool = True
    ) -> None:
        self.url = url
        self._temp = servers_temp() if temp else None
        env = None if self._temp is None else {**os.environ, "TMPDIR": str(self._temp)}
        with log.open("ab") as out:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", str(_LAUNCHER), str(os.getpid()), *command],
                stdin=subprocess.PIPE,  # the launcher's watchdog, where it is one
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=cwd,
                env=env,
            )
        self.pid = self._proc.pid

    def poll(self) -> int | None:
        return self._proc.poll()

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not _healthy(self.url):
            if (code := self._proc.poll()) is not None:
                raise ChildExitedError(self.pid, code)
            if time.monotonic() > deadline:
                raise TimeoutError(self.url)
            time.sleep(0.05)

    def stop(self, grace: float = 10.0, wait: bool = True) -> int | None:
        """SIGTERM the group, SIGKILL it after ``grace`` s; the exit code. Always waited
        for (``wait`` is for forked servers: the CLI is stopped gracefully, ``_grace``)."""
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        if self._proc.poll() is None:
            kill_group(self.pid, signal.SIGTERM)
            try:
                self._proc.wait(grace)
            except subprocess.TimeoutExpired:
                kill_group(self.pid, signal.SIGKILL)
                self._proc.wait()
        if self._temp is not None:
            shutil.rmtree(self._temp, ignore_errors=True)
        return self._proc.returncode


#: Servers of this process still running, by pid.
_live: dict[int, _Child] = {}
#: One zygote per flavor in this process (per xdist worker), kept until exit.
_fork_servers: dict[str, ForkServer] = {}


def _fork_server(flavor: Flavor) -> ForkServer:
    if flavor.name not in _fork_servers:
        _fork_servers[flavor.name] = ForkServer(flavor, server_shortcuts(flavor))
    return _fork_servers[flavor.name]


def warm_up(flavor: Flavor, process: ServerProcess) -> None:
    """Start importing the stack in a zygote now, while pytest collects."""
    if process == "fork" and flavor.installed():
        with contextlib.suppress(ForkServerError, OSError):
            _fork_server(flavor).start()


@atexit.register
def _kill_leftovers() -> None:
    """Normal exit with a server still up (a run interrupted before fixture teardown)."""
    for child in list(_live.values()):
        child.stop(grace=2.0)
    for fork_server in _fork_servers.values():
        fork_server.close()


def _executable(flavor: Flavor) -> str:
    beside = Path(sys.executable).with_name(flavor.cli)
    exe = str(beside) if beside.exists() else shutil.which(flavor.cli)
    if exe is None:
        raise StackNotInstalledError(
            f"the `{flavor.cli}` command is not installed: {flavor.install_hint}"
        )
    return exe


class ServerBackend:
    """The flavor's server on the store, talked to over HTTP."""

    mode: ClassVar[str] = "server"

    def __init__(self, process: ServerProcess = "exec") -> None:
        self.client: Any = None
        self.base_url: str | None = None
        self._process = process
        self._spec: StartSpec | None = None
        self._child: _Child | None = None
        self._port: tuple[int, BaseFileLock] | None = None

    def _spawn(self, spec: StartSpec, port: int, schema: dict[str, Any] | None = None) -> _Child:
        log, url = spec.store.log_path, f"http://127.0.0.1:{port}"
        if self._process == "exec":
            command = spec.flavor.run_command(spec.config_path, port, _executable(spec.flavor))
        else:
            command = spec.flavor.run_command(spec.config_path, port)
        mark_start(log, self._process, command)
        if self._process == "exec":
            return ExecChild(command, url, log, spec.store.path)
        try:
            return _fork_server(spec.flavor).spawn(
                config_path=spec.config_path,
                port=port,
                env=dict(os.environ),
                log_path=log,
                cwd=spec.store.path,
                schema=schema,
            )
        except ForkServerError as exc:
            raise StackError(f"{exc} (--llama-server-process=exec runs the CLI instead)") from None

    def start(self, spec: StartSpec) -> None:
        self._spec = spec
        if self._port is None:
            try:
                self._port = claim_port()
            except NoFreePortError as exc:
                raise StackError(str(exc)) from None
        port = self._port[0]
        log = spec.store.log_path
        sqlite = spec.store.tables.sqlite_folder
        try:
            store = sqlite if self._process == "fork" else None  # exec: the exact CLI path
            with shortcuts.server_schema(spec.flavor, spec.config.path, store) as schema:
                self._child = child = self._spawn(spec, port, schema)
                _live[child.pid] = child
                child.wait_ready(spec.start_timeout)
        except ChildExitedError as exc:
            self.stop()
            raise StackError(f"{self._exited(exc.returncode, log)} (log: {log})") from None
        except TimeoutError:
            self.stop()
            raise StackError(
                f"the {self.mode} was not healthy within {spec.start_timeout:g}s "
                f"(llama_stack_start_timeout); it last said: {failure_line(log)} (log: {log})"
            ) from None
        try:
            client_module = import_quietly(spec.flavor.client_package)
        except ModuleNotFoundError as exc:
            self.stop()
            raise StackNotInstalledError(
                f"{exc.name} is not installed: {spec.flavor.install_hint}"
            ) from None
        self.base_url = f"http://127.0.0.1:{port}"
        with shortcuts.http_client(spec.flavor):
            self.client = getattr(client_module, spec.flavor.client_class)(base_url=self.base_url)
        if spec.recording is not None:  # the test id travels in a header
            spec.recording.stamp(self.client)

    def _exited(self, code: int, log: Path) -> str:
        """Why the start failed, when the process ended during start-up."""
        return f"the server exited with code {code} during start-up: {failure_line(log)}"

    def stop(self, wait: bool = True) -> None:
        """``wait=False``: a server killed at once is not waited for (``release``)."""
        self.client = self.base_url = None
        if (child := self._child) is not None:
            self._child = None
            child.stop(grace=self._grace(), wait=wait)
            _live.pop(child.pid, None)

    def _grace(self) -> float:
        """Seconds a server may take to shut down before it is killed.

        A forked server of a test's own store is killed at once: every registry and SQL
        write is committed as it is made (a restart on the store sees them), and a
        graceful uvicorn shutdown costs 0.2 s of fixed sleeps. A persistent store, and
        the CLI (``exec``, kept for the exact CLI path), get a graceful shutdown.
        """
        assert self._spec is not None
        durable = self._process == "exec" or self._spec.store.kind == "persistent"
        return 10.0 if durable else 0.0

    def release(self, wait: bool = True) -> None:
        """``wait=False``: the port is not used again, so a server killed at once (a test's
        own store) need not be gone, unless the caller touches its files next."""
        self.stop(wait=wait)
        if self._port is not None:
            self._port[1].release()
            self._port = None

    # -- what the server cannot do over HTTP, done on its registry ----------------------

    def toolgroups(self) -> list[ToolgroupRecord]:
        """Neither 0.7 nor OGX has an HTTP toolgroup API: the registry rows are the truth."""
        assert self._spec is not None
        return self._spec.store.toolgroups()

    def register(self, seed: ToolgroupSeed) -> None:
        """Write the row and restart: there is no HTTP route for it (a restart's cost)."""
        assert self._spec is not None
        key, value = self._spec.registry_format().toolgroup_row(
            seed.toolgroup_id, str(seed.provider_id), seed.mcp_endpoint, seed.args
        )
        self._edit_registry({key: value})

    def unregister(self, toolgroup_id: str) -> None:
        assert self._spec is not None
        self._edit_registry({self._spec.registry_format().key("tool_group", toolgroup_id): None})

    def _edit_registry(self, rows: dict[str, str | None]) -> None:
        spec, was_running = self._spec, self.client is not None
        assert spec is not None
        self.stop()
        spec.store.write_registry(rows)
        if was_running:
            with spec.environment():
                self.start(spec)

    def tools(self, toolgroup_id: str | None) -> list[dict[str, Any]]:
        assert self._spec is not None
        assert self.base_url is not None
        flavor = self._spec.flavor
        query = f"?{urllib.parse.urlencode({'toolgroup_id': toolgroup_id})}" if toolgroup_id else ""
        try:
            with urllib.request.urlopen(
                f"{self.base_url}{flavor.tools_path}{query}", timeout=300
            ) as response:
                return list(json.load(response)["data"])
        except urllib.error.HTTPError as exc:
            body = exc.read().decode(errors="replace")[:500]
            known = flavor.tools_route_bug if exc.code == 500 else ""
            raise StackError(
                f"GET {flavor.tools_path} failed with HTTP {exc.code}: {body}."
                + (f" This is a known upstream bug: {known}" if known else "")
            ) from None

    def invoke_tool(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """Neither 0.7.3's server nor OGX 1.5's has an HTTP route that invokes a tool (their
        tool runtime is internal; only listing is served): say so and what works instead."""
        assert self._spec is not None
        flavor = self._spec.flavor
        raise StackError(
            f"invoke_tool({name!r}): the {flavor.name} {flavor.version()} server has no HTTP "
            f"route for invoking a tool (it only lists them, at {flavor.tools_path}). Use "
            "library mode (--llama-stack-mode=library) for invoke_tool, or call the MCP "
            "server at the toolgroup's mcp_endpoint directly with an mcp ClientSession"
        )
