"""Process lifetime (``process/lifetime.py``): a child dies with its parent, a group is
killed whole, a claimed port is held against every other process of the machine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from filelock import FileLock, Timeout

from pytest_llamastate.process import lifetime

#: A parent that starts a child armed with a parent-death signal, says the child's pid,
#: then waits to be killed.
PARENT = """
import os, sys, time
sys.path.insert(0, {folder!r})
import lifetime
pid = os.fork()
if pid == 0:
    lifetime.die_with_parent({parent}(), {sig})
    time.sleep(60)
    os._exit(0)
print(pid, flush=True)
time.sleep(60)
"""


def _gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return True
        if stat.rsplit(") ", 1)[-1].startswith("Z"):  # exited, not yet reaped
            return True
        time.sleep(0.02)
    return False


def _spawn(parent: str) -> subprocess.Popen[bytes]:
    """A parent process whose child arms the parent-death signal for ``parent``'s pid."""
    folder = str(Path(lifetime.__file__).parent)
    script = textwrap.dedent(PARENT.format(folder=folder, parent=parent, sig="9"))
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert process.stdout is not None
    return process


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_a_child_dies_when_its_parent_is_killed() -> None:
    parent = _spawn("os.getppid")
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert not _gone(child, 0.2)  # alive while its parent is
    parent.kill()
    parent.wait()
    assert _gone(child)


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_a_child_whose_parent_is_already_gone_exits_at_once() -> None:
    """The parent it was told of is not its parent (it died before the signal was armed)."""
    parent = _spawn("1 + os.getppid")
    assert parent.stdout is not None
    try:
        child = int(parent.stdout.readline())
        assert _gone(child)
    finally:
        parent.kill()
        parent.wait()


def test_kill_group_kills_the_whole_group_and_ignores_one_already_gone() -> None:
    leader = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, time; "
         "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
         "print(flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    assert leader.stdout is not None
    leader.stdout.readline()
    members = [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and _pgid(int(p.name)) == leader.pid
    ]
    assert len(members) == 2, members
    lifetime.kill_group(leader.pid, signal.SIGKILL)
    leader.wait()
    assert all(_gone(pid) for pid in members)
    lifetime.kill_group(leader.pid, signal.SIGKILL)  # gone: no error


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def test_a_claimed_port_is_held_until_released() -> None:
    port, lock = lifetime.claim_port()
    other, other_lock = lifetime.claim_port()
    try:
        assert port != other
        with pytest.raises(Timeout):  # what another process claiming this port meets
            FileLock(str(lifetime.PORT_LOCKS / f"{port}.lock")).acquire(timeout=0)
    finally:
        lock.release()
        other_lock.release()
    FileLock(str(lifetime.PORT_LOCKS / f"{port}.lock")).acquire(timeout=0)
