"""Run a command that dies with the process that started it, even on SIGKILL.

Run as a script (``python launcher.py PARENT_PID COMMAND...``), never imported by the
plugin, so it starts in milliseconds (of the plugin it loads ``process/lifetime.py`` alone).
On Linux it asks the kernel for a parent-death signal and then becomes the command
(``exec``: same pid, same process group, and the signal survives the exec). Where ``prctl``
is missing it stays as a watchdog instead: it runs the command as its child and kills the
whole group when its stdin, a pipe from the parent, reaches end-of-file, which happens when
the parent dies however it dies.
"""

from __future__ import annotations

import os
import select
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..process import lifetime
else:  # the lifetime module alone, by its folder
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "process"))
    import lifetime


def _parent_death_signal() -> bool:
    if os.environ.get("LLAMASTATE_LAUNCHER_WATCHDOG") == "1":  # the fallback, on demand
        return False
    return lifetime.parent_death_signal()


def _watch(command: list[str]) -> int:
    child = os.fork()
    if child == 0:
        os.execvp(command[0], command)
    while True:
        done, status = os.waitpid(child, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        readable, _, _ = select.select([sys.stdin], [], [], 0.5)
        if readable and not os.read(sys.stdin.fileno(), 4096):
            lifetime.kill_group(0, signal.SIGKILL)  # the parent is gone: take the server with us


def main() -> int:
    parent, command = int(sys.argv[1]), sys.argv[2:]
    armed = _parent_death_signal()
    if os.getppid() != parent:  # the parent died before the signal was armed
        return 1
    if armed:
        os.execvp(command[0], command)
    return _watch(command)


if __name__ == "__main__":
    sys.exit(main())
