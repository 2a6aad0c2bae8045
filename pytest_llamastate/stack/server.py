"""The server way: a child process serving HTTP on a port no other worker holds.

The child runs in its own process group (teardown kills the group), starts through
``launcher.py`` so that it dies with this process even on SIGKILL (an atexit handler does
not run then), writes its log into the store, and counts as ready when ``/v1/health``
says so. A start-up failure is reported by the line the stack itself ended on.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
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
from pathlib import Path
from typing import Any, ClassVar

from filelock import FileLock, Timeout

from ..flavor import Flavor, import_quietly
from ..registry import ToolgroupRecord, write_entries
from ..seeds import ToolgroupSeed
from .backend import StackError, StackNotInstalledError, StartSpec

__all__ = ["ServerBackend", "claim_port", "failure_line", "log_tail"]

_PORT_LOCKS = Path(tempfile.gettempdir()) / "pytest-llamastate-ports"
_LAUNCHER = Path(__file__).with_name("launcher.py")
_LOG_TAIL_LINES = 40
_START_MARK = "--- pytest-llamastate: "
#: The last line of a traceback: ``ValueError: ...``, ``pkg.mod.SomeError: ...``.
_EXCEPTION_LINE = re.compile(
    r"^(?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception|Exit|Interrupt|Failure)\b(?::.*)?$"
)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_live: set[subprocess.Popen[bytes]] = set()


def claim_port() -> tuple[int, FileLock]:
    """A free port, held by a file lock so no other pytest worker hands it out too.

    The lock is an OS lock on an open file: a process killed with SIGKILL drops it.
    """
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


def _run_lines(log: Path) -> list[str]:
    """The lines of ``log`` written by the latest start (a log is appended to)."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    starts = [i for i, line in enumerate(lines) if line.startswith(_START_MARK)]
    return [_ANSI.sub("", line) for line in lines[starts[-1] + 1 if starts else 0 :]]


def failure_line(log: Path) -> str:
    """What the stack said last: its final exception line, or else its last line."""
    lines = [line.rstrip() for line in _run_lines(log) if line.strip()]
    for line in reversed(lines):
        if _EXCEPTION_LINE.match(line):
            return line
    return lines[-1].strip() if lines else "(the log is empty)"


def log_tail(log: Path) -> str:
    lines = _run_lines(log)
    return "\n".join(lines[-_LOG_TAIL_LINES:]) if lines else "(no log)"


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
    _live.discard(proc)


@atexit.register
def _kill_leftovers() -> None:
    """Normal exit with a server still up (a run interrupted before fixture teardown)."""
    for proc in list(_live):
        _kill_group(proc, grace=2.0)


def _executable(flavor: Flavor) -> str:
    beside = Path(sys.executable).with_name(flavor.cli)
    exe = str(beside) if beside.exists() else shutil.which(flavor.cli)
    if exe is None:
        raise StackNotInstalledError(
            f"the `{flavor.cli}` command is not installed: {flavor.install_hint}"
        )
    return exe


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v1/health", timeout=1) as response:
            return bool(json.load(response).get("status") == "OK")
    except (OSError, ValueError, urllib.error.URLError):
        return False


class ServerBackend:
    """``llama stack run`` (OGX: ``ogx run``) on the store, talked to over HTTP."""

    mode: ClassVar[str] = "server"

    def __init__(self) -> None:
        self.client: Any = None
        self.base_url: str | None = None
        self._spec: StartSpec | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: tuple[int, FileLock] | None = None

    def start(self, spec: StartSpec) -> None:
        self._spec = spec
        if self._port is None:
            self._port = claim_port()
        port = self._port[0]
        command = spec.flavor.run_command(spec.config_path, port, _executable(spec.flavor))
        log_path = spec.store.log_path
        with log_path.open("ab") as log:
            log.write(f"\n{_START_MARK}{' '.join(command)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                [sys.executable, "-I", str(_LAUNCHER), str(os.getpid()), *command],
                stdin=subprocess.PIPE,  # the launcher's watchdog, where it is one
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=spec.store.path,
            )
        _live.add(self._proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + spec.start_timeout
        while not _healthy(url):
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self.stop()
                raise StackError(
                    f"the server exited with code {code} during start-up: "
                    f"{failure_line(log_path)} (log: {log_path})"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise StackError(
                    f"the server was not healthy within {spec.start_timeout:g}s "
                    f"(llama_stack_start_timeout); it last said: {failure_line(log_path)} "
                    f"(log: {log_path})"
                )
            time.sleep(0.05)
        try:
            client_module = import_quietly(spec.flavor.client_package)
        except ModuleNotFoundError as exc:
            self.stop()
            raise StackNotInstalledError(
                f"{exc.name} is not installed: {spec.flavor.install_hint}"
            ) from None
        self.base_url = url
        self.client = getattr(client_module, spec.flavor.client_class)(base_url=url)

    def stop(self) -> None:
        self.client = self.base_url = None
        if self._proc is not None:
            if self._proc.stdin is not None:
                self._proc.stdin.close()
            _kill_group(self._proc)
            self._proc = None

    def release(self) -> None:
        self.stop()
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
        write_entries(spec.store.kvstore_path, rows)
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
