"""Process lifetime: the three facts every child process of the plugin relies on.

- **Parent death.** A child asks the kernel for a signal when its parent dies (Linux
  ``PR_SET_PDEATHSIG``; kept across ``exec``): a pytest killed with SIGKILL runs no
  ``atexit`` handler, yet its servers must go with it. Where ``prctl`` is missing the
  caller watches a pipe from its parent instead (``launcher``, the zygote's stdin).
- **The group kill.** A server leads its own process group, so teardown kills what it
  spawned too.
- **Temporary files.** A server stopped at once removes nothing at exit: each gets a
  ``TMPDIR`` of the plugin's, removed when it ends, and a killed run's by the next.
- **The port claim.** A free TCP port on 127.0.0.1 is held by an OS file lock in one
  folder shared by every pytest process of the machine (xdist workers, concurrent runs,
  the throwaway Postgres): no two hand out the same port, and a process killed with
  SIGKILL drops its locks.

Stdlib only (``filelock`` is imported by :func:`claim_port` alone): the scripts that run in
other processes (``stack/launcher.py``, ``stack/zygote.py``, ``storage/postgres/watchdog.py``)
import it by path, without the plugin, and must start in milliseconds.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from filelock import BaseFileLock

__all__ = [
    "PORT_LOCKS",
    "NoFreePortError",
    "claim_port",
    "die_with_parent",
    "kill_group",
    "parent_death_signal",
    "servers_temp",
]

#: The folder of port locks: one ``<port>.lock`` per port held.
PORT_LOCKS = Path(tempfile.gettempdir()) / "pytest-llamastate-ports"
_PR_SET_PDEATHSIG = 1
_PORT_ATTEMPTS = 50


class NoFreePortError(OSError):
    """Every port the kernel offered was held by another pytest process."""


def parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies (on Linux, the
    parent *thread*); also usable in a ``preexec_fn``. ``False`` where ``prctl`` is missing."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent(parent: int, sig: int = signal.SIGKILL) -> bool:
    """:func:`parent_death_signal`, and exit now (code 1) if ``parent`` died before it was
    armed (this process was handed to another parent); whether it was armed."""
    armed = parent_death_signal(sig)
    if os.getppid() != parent:
        os._exit(1)
    return armed


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists (another user's too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def servers_temp() -> Path:
    """A new folder for servers' temporary files (their ``TMPDIR``), in this process's,
    named after this process; the folders of processes that are gone (killed runs) are
    removed first.

    A server killed at once cannot remove its temporary files, and one stopped gracefully
    may not either: OGX 1.5 writes its resolved run config to ``ogx-run-*.yaml`` and
    removes it at exit, which uvicorn skips when it re-raises SIGTERM after its shutdown."""
    prefix = "llamastate-servers-"
    for old in Path(tempfile.gettempdir()).glob(f"{prefix}*-*"):
        pid = old.name.removeprefix(prefix).partition("-")[0]
        if pid.isdigit() and not alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-"))


def kill_group(pid: int, sig: int) -> None:
    """Signal the process group ``pid`` leads (0: this process's own); one already gone is
    no error."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def claim_port() -> tuple[int, BaseFileLock]:
    """A free port on 127.0.0.1, held by its lock in :data:`PORT_LOCKS` until released.

    :class:`NoFreePortError` when every port the kernel offered was held by another
    process (many times over)."""
    from filelock import FileLock, Timeout

    PORT_LOCKS.mkdir(exist_ok=True)
    for _ in range(_PORT_ATTEMPTS):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        lock = FileLock(str(PORT_LOCKS / f"{port}.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            continue
        return port, lock
    raise NoFreePortError("could not find a free TCP port on 127.0.0.1")
