"""The zygote: a process that imports the stack once and forks a server per request.

Run as a script by ``forkserver.ForkServer`` (``python -P zygote.py ENTRY CORE SHORTCUTS``):
stdlib only, nothing of the plugin imported but ``process/lifetime.py`` (by its folder),
``readymade.py``, ``schemaskip.py`` and ``recorderhook.py`` (by their path). It starts no
thread or event loop and opens no store (forking a threaded process is unsafe). It reads
JSON requests on stdin, one per line, and answers on stdout: ``{"hello": pid}`` once
imported, ``{"id", "pid"}`` per fork, ``{"pid", "ready"}`` once a child's uvicorn listens,
``{"pid", "exit"}`` when it ends. It
learns: each ready child reports the modules it imported (SQLAlchemy, the config's
providers...), and the zygote imports them for the next one; what else it takes ready-made
from the zygote is the release's server shortcuts (``readymade``), and what its SQL stores
may skip while it starts (``schemaskip``, in the request). Children lead their own
process group (``setsid``, for the group kill) and die with the zygote, as the zygote dies
with pytest; the zygote also kills them and exits when its stdin closes (the watchdog where
``prctl`` is missing). Each child's ``TMPDIR`` is a folder of the zygote's, removed when
the child ends.

``rebase_config_dirs`` is also imported by library stacks (``library``).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import importlib.util
import json
import os
import select
import shutil
import signal
import sys
import tempfile
import time
import traceback
import types
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING or __package__:  # imported by the plugin
    from ..process import lifetime
else:  # a script in another process: the lifetime module alone, by its folder
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "process"))
    import lifetime

__all__ = ["config_dir_sites", "rebase_config_dirs"]


def rebase_config_dirs(core: str, sites: Sites | None = None) -> None:
    """Point the config-folder constants at the ``*_CONFIG_DIR`` of the environment now.

    llama-stack computes them from the environment at import (in the zygote, or before a
    library stack's store existed); ``from config_dirs import X`` copied them into other
    modules (``sites``, by default :func:`config_dir_sites`), so every module attribute
    equal to an old value is replaced."""
    if (module := sys.modules.get(f"{core}.utils.config_dirs")) is None:
        return
    old = {k: v for k, v in vars(module).items() if isinstance(v, Path)}
    sites = config_dir_sites(core) if sites is None else sites
    new = vars(importlib.reload(module))
    moved = {old[k]: new[k] for k in old if new.get(k) != old[k]}
    for mod, attrs in sites if moved else ():
        for attr in attrs:
            if isinstance(value := vars(mod).get(attr), Path) and value in moved:
                setattr(mod, attr, moved[value])


Sites = list[tuple[types.ModuleType, tuple[str, ...]]]
#: Per module of the stack's package: the module, and its attributes that held a
#: config-folder constant when it was first scanned.
_scanned: dict[str, tuple[types.ModuleType, tuple[str, ...]]] = {}


def config_dir_sites(core: str) -> Sites:
    """Where the stack's modules copied the config-folder constants.

    A module copies them when it is imported, so each is scanned once per process: a
    library stack scans the modules new since the last one; the zygote scans before it
    forks, and its child takes the answer as it is (a child that reads every module's
    attributes copies the pages they are on: ~8 ms of its start)."""
    if (module := sys.modules.get(f"{core}.utils.config_dirs")) is None:
        return []
    values = {v for v in vars(module).values() if isinstance(v, Path)}
    top = core.partition(".")[0]
    for name, mod in list(sys.modules.items()):
        if name.partition(".")[0] == top and _scanned.get(name, (None,))[0] is not mod:
            attrs = (a for a, v in list(vars(mod).items()) if isinstance(v, Path) and v in values)
            _scanned[name] = (mod, tuple(attrs))
    return [site for site in _scanned.values() if site[1]]


def _child(request: dict[str, Any], report: int, zygote: _Zygote) -> None:
    """Become the server ``request`` asks for; never returns."""
    code = 1
    try:
        os.setsid()
        lifetime.die_with_parent(zygote.pid)
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
        os.environ.update(request["env"], TMPDIR=str(zygote.temp_of(os.getpid(), create=True)))
        tempfile.tempdir = None  # from TMPDIR when next asked
        rebase_config_dirs(zygote.core, zygote.sites)
        sys.path.insert(0, str(Path(__file__).with_name("recorder_site")))  # recorderhook.py:
        importlib.import_module("llamastate_recorder_boot")  # installed if recording is on
        starting = contextlib.ExitStack()
        if request.get("schema"):  # its SQL stores skip what the store's files have
            starting.enter_context(
                zygote.schemaskip.skipping(*zygote.schemaskip.unwire(request["schema"]))
            )
        _report_ready_after_startup(report, zygote.readymade, starting.close)
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


def _report_ready_after_startup(report: int, readymade: Any, started: Callable[[], Any]) -> None:
    """Tell the zygote once uvicorn listens, with what it can learn from this child (the
    modules it took to get there...: ``readymade.learned``); call ``started`` before."""
    server_class: Any = importlib.import_module("uvicorn.server").Server
    startup = server_class.startup

    async def reporting_startup(self: Any, sockets: Any = None) -> None:
        await startup(self, sockets=sockets)
        started()
        if self.started:
            os.write(report, b"ready\n")
            with os.fdopen(report, "wb") as out:
                out.write(json.dumps(readymade.learned()).encode())

    server_class.startup = reporting_startup


def _beside(name: str) -> Any:
    """The module ``name`` beside this file, loaded by path (a script has no package)."""
    path = Path(__file__).with_name(f"{name}.py")
    spec: Any = importlib.util.spec_from_file_location(f"_llamastate_{name}", path)
    sys.modules[spec.name] = module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Zygote:
    """Import once, then fork a child per JSON request on stdin; report on stdout."""

    def __init__(self, entry: str, core: str, shortcuts: str) -> None:
        """``shortcuts``: the server shortcuts to take, comma-separated."""
        lifetime.die_with_parent(int(os.environ.pop("_LLAMASTATE_PARENT")))
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is pytest's to handle
        start = time.perf_counter()
        self.readymade, self.schemaskip = _beside("readymade"), _beside("schemaskip")
        _beside("recorderhook")  # for its children's ``llamastate_recorder_boot``
        modules = ["uvicorn.server", entry.partition(":")[0], f"{core}.server.server"]
        self.readymade.prepare(modules, core, shortcuts.split(","))
        self.sites = config_dir_sites(core)
        gc.freeze()  # keep the children's garbage collector off the shared pages
        self.entry, self.core, self.pid = entry, core, os.getpid()
        self.temp = lifetime.servers_temp()  # a folder per child in it
        self.out = os.fdopen(1, "wb", buffering=0)
        self.children: set[int] = set()
        self.reports: dict[int, tuple[int, bytearray]] = {}  # read end: (pid, its words)
        self.wake, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)  # SIGCHLD wakes the select below
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.say({"hello": self.pid, "import_s": round(time.perf_counter() - start, 3)})

    def temp_of(self, pid: int, create: bool = False) -> Path:
        """The temporary folder of child ``pid`` (its ``TMPDIR``), removed when it ends:
        a server killed at once leaves what it meant to remove at exit (OGX 1.5 writes
        its resolved run config to ``ogx-run-*.yaml`` there, one file per server)."""
        folder = self.temp / str(pid)
        if create:
            folder.mkdir(mode=0o700)
        return folder

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
                shutil.rmtree(self.temp_of(done[0]), ignore_errors=True)
                self.say({"pid": done[0], "exit": os.waitstatus_to_exitcode(done[1])})
            for fd in (fd for fd in readable if fd in self.reports):
                self.read_report(fd)
            if 0 in readable:
                if not (chunk := os.read(0, 1 << 20)):  # pytest is gone or done: so are
                    for pid in self.children:  # its servers
                        lifetime.kill_group(pid, signal.SIGKILL)
                    shutil.rmtree(self.temp, ignore_errors=True)
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
            try:
                learned = json.loads(said[6:] or b"{}")
            except ValueError:  # cut short: the child was stopped while it reported
                return
            self.readymade.learn(learned)
            self.sites = config_dir_sites(self.core)
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
