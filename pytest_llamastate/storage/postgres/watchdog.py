"""The throwaway Postgres's watchdog: the postmaster's parent, which stops it when the last
user is gone.

Runs as ``python watchdog.py ROOT PGDATA BIN_DIR AS_USER_JSON`` (a script: stdlib and
filelock only; of the plugin, ``process/lifetime.py`` alone, loaded by its folder). Users
hold a shared ``flock`` on ``ROOT/users.lock``; the watchdog polls for an exclusive one and,
once it gets it, stops the server. It holds ``ROOT/watchdog.lock`` for as long as it lives,
so a later user knows whether a server is running whatever ``server.json`` says.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING or __package__:  # imported by the plugin, for its path
    from ...process import lifetime
else:  # a script in another process: the lifetime module alone, by its folder
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "process"))
    import lifetime

_POLL = 0.25
_SERVER_SETTINGS = (
    # Throwaway servers: durability is not the point, speed of CREATE/DROP DATABASE is.
    # A killed process loses nothing (the OS has the data); only an OS crash could.
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    "max_connections=300",
    "unix_socket_directories=",
    "listen_addresses=127.0.0.1",
)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Fast shutdown (SIGINT: clients cut, data clean), then harder if it hangs."""
    for sig, wait in ((signal.SIGINT, 15.0), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)
            return


def _ready(pgdata: Path, port: int) -> bool:
    try:
        lines = (pgdata / "postmaster.pid").read_text(encoding="utf-8").splitlines()
    except OSError:
        return False
    if len(lines) < 8 or lines[7].strip() != "ready":
        return False
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait_for_old_postmaster(pgdata: Path, timeout: float = 30.0) -> None:
    """Let a postmaster whose watchdog was killed finish its shutdown (its parent-death
    signal started one) before a new one is started on the same data folder."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text(encoding="utf-8").split()[0])
    except (OSError, ValueError, IndexError):
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and lifetime.alive(pid):
        time.sleep(0.05)


def _watch(root: Path, pgdata: Path, bin_dir: Path, as_user: dict[str, Any]) -> int:
    state = root / "server.json"
    users = os.open(root / "users.lock", os.O_RDWR | os.O_CREAT, 0o600)
    alive = os.open(root / "watchdog.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(alive, fcntl.LOCK_EX)  # held until this process ends, however it ends
    _wait_for_old_postmaster(pgdata)
    stopping = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    for _attempt in range(3):  # the claimed port may still be taken by a stranger
        try:  # the same locks as the stacks' ports: no worker hands ours to a stack
            port, port_lock = lifetime.claim_port()
        except lifetime.NoFreePortError as exc:
            print(f"error {exc}", flush=True)
            return 1
        options = [f"-c{setting}" for setting in _SERVER_SETTINGS]
        command = [str(bin_dir / "postgres"), "-D", str(pgdata), "-p", str(port), *options]
        with (root / "server.log").open("ab") as log:
            proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=lambda: lifetime.parent_death_signal(signal.SIGINT), **as_user,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while proc.poll() is None and not _ready(pgdata, port) and time.monotonic() < deadline:
            time.sleep(0.02)
        if proc.poll() is None and _ready(pgdata, port):
            break
        _stop(proc)
        port_lock.release()
    else:
        tail = (root / "server.log").read_text(errors="replace").strip().splitlines()[-1:]
        print(f"error postgres exited: {tail[0] if tail else 'no log'}", flush=True)
        return 1
    state.write_text(json.dumps({"port": port, "watchdog": os.getpid(), "postmaster": proc.pid}))
    print(f"ready {port}", flush=True)
    sys.stdout.close()
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    while not stopping and proc.poll() is None:
        time.sleep(_POLL)
        try:
            fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue
        break  # nobody holds a shared lock: the last user is gone
    _stop(proc)
    state.unlink(missing_ok=True)
    port_lock.release()
    os.close(users)
    return 0


if __name__ == "__main__":
    root_arg, pgdata_arg, bin_arg, child_arg = sys.argv[1:5]
    sys.exit(_watch(Path(root_arg), Path(pgdata_arg), Path(bin_arg), json.loads(child_arg)))
