"""Server-mode stacks at fork speed: import the stack once, fork a server per test.

A ``llama stack run`` costs 1.7-2.5 s, mostly the interpreter starting and importing
llama-stack. Here a *zygote* (``zygote.py``, a process of its own, one per pytest process
and flavor) imports the flavor's CLI and server once and forks a child per server, which
runs the flavor's console-script entry point with ``llama stack run CONFIG --port P`` as
argv: the same app, uvicorn settings and log as the CLI, with the store's environment set
before the config is loaded (``${env.X}`` is resolved then).

Why a zygote, not ``fork()`` in pytest: pytest has threads (OGX's loop, the plugin's
reaper), and forking a threaded process is unsafe. This module is the pytest side: it
starts the zygote, asks it for servers and follows their readiness and exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..process.lifetime import kill_group

if TYPE_CHECKING:
    from ..releases import Flavor

__all__ = ["ChildExitedError", "ForkServer", "ForkServerError", "ServerChild"]

_ZYGOTE = Path(__file__).with_name("zygote.py")
#: Seconds the zygote may take to import the stack, or to answer a fork request.
_ZYGOTE_TIMEOUT = 120.0


class ForkServerError(RuntimeError):
    """The zygote could not start or died: fall back to exec mode or report."""


class ChildExitedError(RuntimeError):
    """A server exited before it was ready; its output is in its log."""

    def __init__(self, pid: int, returncode: int) -> None:
        super().__init__(f"the server (pid {pid}) exited with code {returncode}")
        self.pid, self.returncode = pid, returncode


def _entry_point(flavor: Flavor) -> str:
    """``module:function`` of the flavor's CLI, from its console-script metadata."""
    for ep in metadata.entry_points(group="console_scripts", name=flavor.cli):
        if ep.value.split(".")[0] == flavor.package:
            return str(ep.value)
    raise ForkServerError(f"`{flavor.cli}` is not installed: {flavor.install_hint}")


@dataclass
class ServerChild:
    """One forked server; its exit is reported by the zygote (its parent)."""

    pid: int
    _server: ForkServer = field(repr=False)
    ready: bool = False
    returncode: int | None = None

    def poll(self) -> int | None:
        """The exit code (negative: killed by that signal), or ``None`` while it runs."""
        if self.returncode is None:
            self._server.pump(0)
        return self.returncode

    def wait_ready(self, timeout: float) -> None:
        """Block until the server listens (the child says so after uvicorn's start-up);
        :class:`ChildExitedError` if it dies first, ``TimeoutError`` after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not self.ready:
            if self.returncode is not None:
                raise ChildExitedError(self.pid, self.returncode)
            if (left := deadline - time.monotonic()) <= 0:
                raise TimeoutError(f"the server (pid {self.pid}) was not ready in {timeout:g}s")
            self._server.pump(left)

    def wait(self, timeout: float) -> int | None:
        """The exit code once it exits within ``timeout`` seconds, else ``None``."""
        deadline = time.monotonic() + timeout
        with contextlib.suppress(ForkServerError):  # gone with the zygote: code set
            while self.returncode is None and (left := deadline - time.monotonic()) > 0:
                self._server.pump(left)
        return self.returncode

    def stop(self, grace: float = 10.0, wait: bool = True) -> int | None:
        """SIGTERM the group, SIGKILL it after ``grace`` s; the exit code. ``grace=0``: SIGKILL
        now (registry writes are committed as made: a restart on the store still sees them).

        ``wait=False`` with ``grace=0``: return once the signal is sent, with ``None``. The
        kernel then takes ~10 ms to free the server's memory (its pages are the zygote's,
        shared), time a test's teardown need not wait for: nothing of the server runs
        again, its port stays taken until it is gone (the kernel offers another), and the
        zygote's word of its exit is read with the next one."""
        if self.returncode is None:
            kill_group(self.pid, signal.SIGKILL if grace <= 0 else signal.SIGTERM)
            if grace <= 0 and not wait:
                return None
            if grace > 0 and self.wait(grace) is None:
                kill_group(self.pid, signal.SIGKILL)
            self.wait(10.0)
        kill_group(self.pid, signal.SIGKILL)  # anything the server spawned
        return self.returncode


class ForkServer:
    """The pytest side of one zygote: spawns servers, tracks their readiness and exit.

    Use one per pytest process (per xdist worker) and flavor, from one long-lived thread
    (the main one): on Linux the zygote dies with the *thread* that started it.
    """

    @classmethod
    def supported(cls) -> bool:
        """Whether this platform can fork; otherwise run servers with exec."""
        return hasattr(os, "fork") and sys.platform != "win32"

    def __init__(self, flavor: Flavor, shortcuts: Collection[str] = ()) -> None:
        """``shortcuts``: the release's server shortcuts (``releases.server_shortcuts``)."""
        self.flavor, self.shortcuts = flavor, ",".join(sorted(shortcuts))
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        self._buffer, self._next_id = b"", 0
        self._said: dict[Any, dict[str, Any]] = {}  # "hello", or a request id: the answer
        self._children: dict[int, ServerChild] = {}

    def start(self) -> None:
        """Start the zygote without waiting for its imports (call early to overlap them
        with collection); :meth:`spawn` does it lazily otherwise."""
        if self._proc is not None:
            return
        flags = ["-P"] if sys.version_info >= (3, 11) else []  # not this folder on sys.path
        entry, core = _entry_point(self.flavor), self.flavor.core
        command = [sys.executable, *flags, str(_ZYGOTE), entry, core, self.shortcuts]
        env = {k: v for k, v in os.environ.items() if k != self.flavor.inference_mode_var}
        env["_LLAMASTATE_PARENT"] = str(os.getpid())
        self._stderr.seek(0)
        self._stderr.truncate()
        self._proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env=env
        )
        self._buffer, self._said = b"", {}

    def spawn(
        self,
        *,
        config_path: Path,
        port: int,
        env: Mapping[str, str],
        log_path: Path,
        cwd: Path,
        schema: Mapping[str, Any] | None = None,
    ) -> ServerChild:
        """Fork a server for ``config_path`` on ``port``; ``env`` is its whole environment
        (``os.environ`` with the store's variables applied), its output goes to ``log_path``;
        ``schema``: what its SQL stores may skip until it listens (``schemaskip.wire``)."""
        self.start()
        self._answer("hello", "start")
        self._next_id += 1
        request = {"id": self._next_id, "argv": self.flavor.run_command(config_path, port)}
        request.update(env=dict(env), log=str(log_path), cwd=str(cwd), schema=schema)
        try:
            assert self._proc is not None
            assert self._proc.stdin is not None
            self._proc.stdin.write(json.dumps(request).encode() + b"\n")
            self._proc.stdin.flush()
        except OSError:
            self._lost()
        reply = self._answer(self._next_id, "fork")
        if "error" in reply:
            raise ForkServerError(f"the fork server could not fork: {reply['error']}")
        return self._children[reply["pid"]]

    def _answer(self, key: object, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + _ZYGOTE_TIMEOUT
        while key not in self._said:
            if (left := deadline - time.monotonic()) <= 0:
                raise ForkServerError(f"the fork server did not {what} in {_ZYGOTE_TIMEOUT:g}s")
            self.pump(left)
        return self._said[key] if key == "hello" else self._said.pop(key)

    def pump(self, timeout: float) -> None:
        """Read what the zygote said within ``timeout`` seconds and dispatch it."""
        if self._proc is None or self._proc.stdout is None:
            raise ForkServerError("the fork server is not running")
        if not select.select([self._proc.stdout], [], [], max(timeout, 0))[0]:
            return
        if not (data := os.read(self._proc.stdout.fileno(), 1 << 16)):
            self._lost()
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        for message in map(json.loads, lines):
            if "id" in message:
                if "pid" in message:  # known here, before its exit can be read
                    self._children[message["pid"]] = ServerChild(message["pid"], self)
                self._said[message["id"]] = message
            elif "hello" in message:
                self._said["hello"] = message
            elif (child := self._children.get(message["pid"])) is None:
                continue
            elif "exit" in message:
                child.returncode = message["exit"]
                del self._children[child.pid]
            else:
                child.ready = True

    def _lost(self) -> None:
        """The zygote is gone: so are its children (they die with it)."""
        self._reset()
        self._stderr.seek(0)
        log = self._stderr.read().decode(errors="replace").strip()
        raise ForkServerError(f"the fork server exited; its stderr: {log[-2000:]}")

    def _reset(self) -> None:
        for child in self._children.values():
            child.returncode = -signal.SIGKILL  # what their death signal does
        self._children.clear()
        if (proc := self._proc) is not None:
            self._proc = None
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                proc.communicate(timeout=5)  # a closed stdin is its signal to go
            proc.kill()  # a no-op once it has exited
            proc.wait()

    def close(self) -> None:
        """Kill every server and the zygote."""
        for child in list(self._children.values()):
            child.stop(grace=0)
        self._reset()
        self._stderr.close()
