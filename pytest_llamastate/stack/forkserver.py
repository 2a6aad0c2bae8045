"""Server-mode stacks at fork speed: import the stack once, fork a server per test.

A ``llama stack run`` costs 1.7-2.5 s, mostly the interpreter starting and importing
llama-stack. Here a *zygote* (a process of its own, one per pytest process and flavor)
imports the flavor's CLI and server once and forks a child per server, which runs the
flavor's console-script entry point with ``llama stack run CONFIG --port P`` as argv: the
same app, uvicorn settings and log as the CLI, with the store's environment set before
the config is loaded (``${env.X}`` is resolved then).

Why a zygote, not ``fork()`` in pytest: pytest has threads (OGX's loop, the plugin's
reaper), and forking a threaded process is unsafe. The zygote starts no thread or event loop
and opens no store. It learns: each ready child reports the modules it imported (SQLAlchemy,
the config's providers...), and the zygote imports them for the next one; what else it
takes ready-made from the zygote is the release's server shortcuts (``readymade``). Children lead
their own process group (``setsid``, for the group kill) and get ``PR_SET_PDEATHSIG`` =
SIGKILL on Linux, as the zygote does towards pytest; the zygote also kills them and exits
when its stdin closes (the watchdog where prctl is missing). Stdlib only: run as a script.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import importlib.util
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..releases import Flavor

__all__ = ["ChildExitedError", "ForkServer", "ForkServerError", "ServerChild", "rebase_config_dirs"]

#: Seconds the zygote may take to import the stack, or to answer a fork request.
_ZYGOTE_TIMEOUT = 120.0


class ForkServerError(RuntimeError):
    """The zygote could not start or died: fall back to exec mode or report."""


class ChildExitedError(RuntimeError):
    """A server exited before it was ready; its output is in its log."""

    def __init__(self, pid: int, returncode: int) -> None:
        super().__init__(f"the server (pid {pid}) exited with code {returncode}")
        self.pid, self.returncode = pid, returncode


def _die_with_parent(parent: int) -> None:
    """Get SIGKILL when ``parent`` dies (Linux); exit now if it is already gone."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)


def _killpg(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


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

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM the group, SIGKILL it after ``grace`` s; the exit code. ``grace=0``: SIGKILL
        now (registry writes are committed as made: a restart on the store still sees them)."""
        if self.returncode is None:
            _killpg(self.pid, signal.SIGKILL if grace <= 0 else signal.SIGTERM)
            if grace > 0 and self.wait(grace) is None:
                _killpg(self.pid, signal.SIGKILL)
            self.wait(10.0)
        _killpg(self.pid, signal.SIGKILL)  # anything the server spawned
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
        command = [sys.executable, *flags, __file__, entry, core, self.shortcuts]
        env = {k: v for k, v in os.environ.items() if k != self.flavor.inference_mode_var}
        env["_LLAMASTATE_PARENT"] = str(os.getpid())
        self._stderr.seek(0)
        self._stderr.truncate()
        self._proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env=env
        )
        self._buffer, self._said = b"", {}

    def spawn(
        self, *, config_path: Path, port: int, env: Mapping[str, str], log_path: Path, cwd: Path
    ) -> ServerChild:
        """Fork a server for ``config_path`` on ``port``; ``env`` is its whole environment
        (``os.environ`` with the store's variables applied), its output goes to ``log_path``."""
        self.start()
        self._answer("hello", "start")
        self._next_id += 1
        request = {"id": self._next_id, "argv": self.flavor.run_command(config_path, port)}
        request.update(env=dict(env), log=str(log_path), cwd=str(cwd))
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


def rebase_config_dirs(core: str) -> None:
    """Point the config-folder constants at the ``*_CONFIG_DIR`` of the environment now.

    llama-stack computes them from the environment at import (in the zygote, or before a
    library stack's store existed); ``from config_dirs import X`` copied them into other
    modules, so every module attribute equal to an old value is replaced."""
    if (module := sys.modules.get(f"{core}.utils.config_dirs")) is None:
        return
    old = {k: v for k, v in vars(module).items() if isinstance(v, Path)}
    new = vars(importlib.reload(module))
    moved = {old[k]: new[k] for k in old if new.get(k) != old[k]}
    for name, mod in list(sys.modules.items()):
        if moved and name.partition(".")[0] == core.partition(".")[0]:
            for attr, value in list(vars(mod).items()):
                if isinstance(value, Path) and value in moved:
                    setattr(mod, attr, moved[value])


def _child(request: dict[str, Any], report: int, zygote: _Zygote) -> None:
    """Become the server ``request`` asks for; never returns."""
    code = 1
    try:
        os.setsid()
        _die_with_parent(zygote.pid)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.closerange(3, report)
        os.closerange(report + 1, 1 << 16)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        rebase_config_dirs(zygote.core)
        sys.path.insert(0, str(Path(__file__).with_name("recorder_site")))  # recorderhook.py:
        importlib.import_module("llamastate_recorder_boot")  # installed if recording is on
        _report_ready_after_startup(report, zygote.readymade)
        sys.argv = list(request["argv"])
        module, _, function = zygote.entry.partition(":")
        result = getattr(importlib.import_module(module), function)()
        code = result if isinstance(result, int) else 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):
                stream.flush()
        os._exit(code)


def _report_ready_after_startup(report: int, readymade: Any) -> None:
    """Tell the zygote once uvicorn listens, with what it can learn from this child (the
    modules it took to get there...: ``readymade.learned``)."""
    server_class: Any = importlib.import_module("uvicorn.server").Server
    startup = server_class.startup

    async def reporting_startup(self: Any, sockets: Any = None) -> None:
        await startup(self, sockets=sockets)
        if self.started:
            os.write(report, b"ready\n")
            with os.fdopen(report, "wb") as out:
                out.write(json.dumps(readymade.learned()).encode())

    server_class.startup = reporting_startup


def _readymade() -> Any:
    """``readymade.py`` beside this file, loaded by path (a script has no package)."""
    path = Path(__file__).with_name("readymade.py")
    spec: Any = importlib.util.spec_from_file_location("_llamastate_readymade", path)
    spec.loader.exec_module(module := importlib.util.module_from_spec(spec))
    return module


class _Zygote:
    """Import once, then fork a child per JSON request on stdin; report on stdout."""

    def __init__(self, entry: str, core: str, shortcuts: str) -> None:
        """``shortcuts``: the server shortcuts to take, comma-separated."""
        _die_with_parent(int(os.environ.pop("_LLAMASTATE_PARENT")))
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is pytest's to handle
        start = time.perf_counter()
        self.readymade = _readymade()
        modules = ["uvicorn.server", entry.partition(":")[0], f"{core}.server.server"]
        self.readymade.prepare(modules, core, shortcuts.split(","))
        gc.freeze()  # keep the children's garbage collector off the shared pages
        self.entry, self.core, self.pid = entry, core, os.getpid()
        self.out = os.fdopen(1, "wb", buffering=0)
        self.children: set[int] = set()
        self.reports: dict[int, tuple[int, bytearray]] = {}  # read end: (pid, its words)
        self.wake, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)  # SIGCHLD wakes the select below
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.say({"hello": self.pid, "import_s": round(time.perf_counter() - start, 3)})

    def say(self, message: dict[str, Any]) -> None:
        self.out.write(json.dumps(message).encode() + b"\n")

    def run(self) -> None:
        stdin = b""
        while True:
            readable = select.select([0, self.wake, *self.reports], [], [])[0]
            if self.wake in readable:
                os.read(self.wake, 4096)
            while self.children and (done := os.waitpid(-1, os.WNOHANG))[0]:
                self.children.discard(done[0])
                self.say({"pid": done[0], "exit": os.waitstatus_to_exitcode(done[1])})
            for fd in (fd for fd in readable if fd in self.reports):
                self.read_report(fd)
            if 0 in readable:
                if not (chunk := os.read(0, 1 << 20)):  # pytest is gone or done: so are
                    for pid in self.children:  # its servers
                        _killpg(pid, signal.SIGKILL)
                    os._exit(0)
                *lines, stdin = (stdin + chunk).split(b"\n")
                for line in lines:
                    self.fork(json.loads(line))

    def read_report(self, fd: int) -> None:
        pid, said = self.reports[fd]
        if chunk := os.read(fd, 1 << 16):
            if not said and chunk.startswith(b"ready\n"):
                self.say({"pid": pid, "ready": True})
            said += chunk
            return
        os.close(fd)
        del self.reports[fd]
        if said.startswith(b"ready\n"):  # learn what the child imported, parsed...
            self.readymade.learn(json.loads(said[6:] or b"{}"))
            gc.freeze()

    def fork(self, request: dict[str, Any]) -> None:
        report_r, report_w = os.pipe()
        try:
            pid = os.fork()
        except OSError as exc:
            os.close(report_r)
            os.close(report_w)
            self.say({"id": request["id"], "error": str(exc)})
            return
        if pid == 0:
            _child(request, report_w, self)
        os.close(report_w)
        self.children.add(pid)
        self.reports[report_r] = (pid, bytearray())
        self.say({"id": request["id"], "pid": pid})


if __name__ == "__main__":
    _Zygote(*sys.argv[1:4]).run()
