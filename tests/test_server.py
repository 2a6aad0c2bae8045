"""Server mode's process plumbing: dying with the run, freeing its locks, reporting why a
start failed. Real servers of the installed flavor; `llama stack run` / `ogx run`."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from filelock import FileLock
from flavors import skip_module_without_a_stack
from ports import nothing_listens

from pytest_llamastate import LlamaStackFactory, LlamaStore
from pytest_llamastate.process.lifetime import PORT_LOCKS
from pytest_llamastate.stack.server import failure_line, log_tail
from pytest_llamastate.state.stackconfig import DEFAULT_CONFIG

skip_module_without_a_stack()


def _stat(pid: int) -> tuple[str, int] | None:
    """State and parent of a process; ``None`` once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1])


def descendants(pid: int) -> set[int]:
    parents = {int(p.name): _stat(int(p.name)) for p in Path("/proc").iterdir() if p.name.isdigit()}
    found, frontier = set(), {pid}
    while frontier:
        frontier = {c for c, st in parents.items() if st and st[1] in frontier} - found
        found |= frontier
    return found


def alive(pids: set[int]) -> set[int]:
    return {p for p in pids if (st := _stat(p)) is not None and st[0] != "Z"}


def wait_for(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


HOLD = """
import pathlib, time, pytest

@pytest.mark.persistent("held")
def test_hold(llama_stack):
    pathlib.Path("port").write_text(llama_stack.base_url.rsplit(":", 1)[1])
    time.sleep(600)
"""

NEXT = """
import pytest

@pytest.mark.persistent("held")
def test_next(llama_stack):
    assert llama_stack.toolgroups() == []
"""


@pytest.mark.flavor_neutral
@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
@pytest.mark.parametrize(
    ("process", "watchdog"),
    [("fork", False), ("exec", False), ("exec", True)],
    ids=["fork", "exec-parent-death-signal", "exec-watchdog"],
)
def test_a_run_killed_with_sigkill_leaves_no_server_and_no_lock(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, process: str, watchdog: bool
) -> None:
    if watchdog:  # what platforms without prctl get: the launcher watches its stdin
        monkeypatch.setenv("LLAMASTATE_LAUNCHER_WATCHDOG", "1")
    pytester.makepyfile(test_hold=HOLD, test_next=NEXT)
    persist = pytester.path / "persist"
    args = [
        "--llama-stack-mode=server",
        f"--llama-server-process={process}",
        f"--llama-persist-dir={persist}",
        "-p",
        "no:cacheprovider",
    ]
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", *args, "test_hold.py"],
        cwd=pytester.path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = pytester.path / "port"
        written = lambda: port_file.exists() and port_file.read_text().strip()  # noqa: E731
        assert wait_for(written, 120), "the server did not start"
        port = int(port_file.read_text())
        # the server, and the zygote (fork) or the launcher watching stdin (watchdog)
        servers = descendants(run.pid)
        assert len(servers) == (2 if process == "fork" or watchdog else 1), servers
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait()
    # a process in exit is no zombie yet while it closes its sockets: wait for both
    gone = wait_for(lambda: not alive(servers) and nothing_listens(port), 5)
    assert gone, (alive(servers), port)
    FileLock(str(PORT_LOCKS / f"{port}.lock")).acquire(timeout=0)  # and so is its lock
    # the persistent store's lock went with the process: the next run gets the store at once
    result = pytester.runpytest_subprocess(
        *args, "-o", "llama_persist_lock_timeout=5", "test_next.py"
    )
    result.assert_outcomes(passed=1)


def write_log(path: Path, *runs: str) -> Path:
    path.write_text("".join(f"\n--- pytest-llamastate: llama stack run x\n{run}" for run in runs))
    return path


@pytest.mark.parametrize(
    ("log", "line"),
    [
        (
            'INFO: starting\nTraceback (most recent call last):\n  File "x.py"\n'
            "ValueError: Provider `remote::x` is not available for API tool_runtime\n"
            "INFO: shutting down\n",
            "ValueError: Provider `remote::x` is not available for API tool_runtime",
        ),
        (
            "Traceback:\npydantic_core._pydantic_core.ValidationError: 1 validation error\n  x\n",
            "pydantic_core._pydantic_core.ValidationError: 1 validation error",
        ),
        ("\x1b[31mKeyboardInterrupt\x1b[0m\n", "KeyboardInterrupt"),
        (  # OGX: rich indents the traceback, and logs on after it
            "    raise ValueError(f'Provider')\n"
            "         ValueError: Provider `remote::x` is not available        \n"
            "INFO  2026-12-01  Received interrupt signal, shutting down gracefully...\n"
            "         category=cli\n",
            "ValueError: Provider `remote::x` is not available",
        ),
        ("INFO: Waiting for application startup.\n", "INFO: Waiting for application startup."),
        ("", "(the log is empty)"),
    ],
)
def test_failure_line_is_the_last_exception_line_of_the_latest_start(
    tmp_path: Path, log: str, line: str
) -> None:
    path = write_log(tmp_path / "server.log", "OSError: from an earlier start\n", log)
    assert failure_line(path) == line


def test_log_tail_shows_only_the_latest_start(tmp_path: Path) -> None:
    path = write_log(tmp_path / "server.log", "first run\n", "second run\n")
    assert log_tail(path) == "second run"
    assert log_tail(tmp_path / "missing.log") == "(no log)"


def test_launcher_exits_when_its_parent_is_already_gone(tmp_path: Path) -> None:
    launcher = Path(__file__).parent.parent / "pytest_llamastate" / "stack" / "launcher.py"
    marker = tmp_path / "ran"
    not_my_parent = 1 if os.getpid() != 1 else 2
    result = subprocess.run(
        [sys.executable, str(launcher), str(not_my_parent), "touch", str(marker)], check=False
    )
    assert result.returncode == 1
    assert not marker.exists()


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_close_leaves_the_stores_databases_free_for_a_journal_change(tmp_path: Path) -> None:
    """``close()`` waits for a killed server to be gone (a state template's seal changes the
    journal next); the fixture's teardown, ``close(wait=False)``, does not."""
    store = LlamaStore.create(tmp_path / "store")
    with store.activate():
        stack = LlamaStackFactory("server", DEFAULT_CONFIG).start(store)
        stack.client.files.list()
        pids = descendants(os.getpid()) - {os.getpid()}
        server = {p for p in pids if Path(f"/proc/{p}/cwd").resolve() == store.path.resolve()}
        stack.close()
    assert server
    assert not alive(server)
    databases = sorted(store.path.rglob("*.db"))
    assert databases
    for db in databases:
        with sqlite3.connect(db, timeout=0) as conn:  # locked: raises at once
            assert conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0] == "delete"


def test_an_exec_server_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its ``TMPDIR`` is a folder of the plugin's, removed when it stops (forked servers:
    tests/test_forkserver.py): OGX 1.5 writes ``ogx-run-*.yaml`` there and removes it at
    exit, which uvicorn skips when it re-raises SIGTERM after its graceful shutdown. A
    killed run's folder is removed by the next server's start."""
    temp = tmp_path / "tmp"
    (temp / "llamastate-servers-999999999-old").mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    store = LlamaStore.create(tmp_path / "store")
    with store.activate():
        stack = LlamaStackFactory("server", DEFAULT_CONFIG, server_process="exec").start(store)
        stack.client.files.list()
        (root,) = temp.iterdir()
        assert root.name.startswith(f"llamastate-servers-{os.getpid()}-")
        stack.close()
    assert list(temp.iterdir()) == []
