"""What the container-mode tests share: the containers a run left, helpers for inner
tests, and reopening a kept store by running the line ``llamastate env`` prints."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pytest_llamastate.releases import detect
from pytest_llamastate.stack.engine import STORE_LABEL, Engine

FLAVOR = detect()
#: Whether the server can list tools over HTTP: OGX 1.5's route answers HTTP 500.
SERVER_LISTS_TOOLS = not FLAVOR.tools_route_bug


def containers(engine: Engine, label: str) -> list[str]:
    """The names of the containers (running or not) carrying ``label`` (``key=value``)."""
    listed = engine.call("ps", "-a", "--filter", f"label={label}", "--format", "{{.Names}}")
    return listed.stdout.split()


def inner_helpers(pytester: pytest.Pytester, engine: Engine) -> None:
    """Helpers for the inner tests: the container serving a store, and the toolgroups the
    server itself knows (its tool listing; OGX's rows, its route being broken upstream)."""
    pytester.syspathinsert()
    pytester.makepyfile(
        inner_helpers=f"""
import subprocess

def container_of(stack):
    listed = subprocess.run(
        [{engine.exe!r}, "ps", "--filter",
         "label={STORE_LABEL}=" + str(stack.store.path), "--format", "{{{{.Names}}}}"],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    assert len(listed) == 1, listed
    return listed[0]

def served_toolgroups(stack):
    if {SERVER_LISTS_TOOLS!r}:
        return sorted({{t["toolgroup_id"] for t in stack.tools()}})
    return sorted(t.identifier for t in stack.toolgroups())
"""
    )


def _get(url: str, timeout: float) -> object:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def _healthy(url: str, run: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and run.poll() is None:
        try:
            return _get(f"{url}/v1/health", 1) == {"status": "OK"}
        except OSError:
            time.sleep(0.2)
    return False


def run_line(store: Path) -> str:
    """The run line ``llamastate env STORE`` prints for a store a container served."""
    env = subprocess.run(
        [sys.executable, "-m", "pytest_llamastate", "env", str(store)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return next(line[2:] for line in env.splitlines() if line.startswith("# "))


def reopen(engine: Engine, line: str) -> list[str]:
    """Run ``line`` exactly as printed (the engine's CLI in the foreground, as a person
    would), wait for the stack, and return the names of the files it serves. Then stop
    it as a person would (Ctrl-C: SIGINT to the terminal's foreground process group; so
    rootless podman needs it: its ``run`` re-executes itself in a user namespace, and
    the outer process alone exits on SIGINT without passing it on) and check that
    ``--rm`` left no container behind."""
    command = shlex.split(line)
    port = command[command.index("--port") + 1]
    run = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        url = f"http://127.0.0.1:{port}"
        assert _healthy(url, run, 180), f"{line} did not become healthy"
        files = _get(f"{url}/v1/files", 30)
        assert isinstance(files, dict)
        names = [f["filename"] for f in files["data"]]
    finally:
        os.killpg(run.pid, signal.SIGINT)
        try:
            run.wait(60)
        except subprocess.TimeoutExpired:
            run.kill()
            raise
    # rootless podman's outer process returns at once; the one inside the namespace
    # removes the container when the stack has shut down
    deadline = time.monotonic() + 60
    while f"--port {port}" in (listed := _commands(engine)):
        assert time.monotonic() < deadline, listed
        time.sleep(0.5)
    return names


def _commands(engine: Engine) -> str:
    return engine.call("ps", "-a", "--no-trunc", "--format", "{{.Command}}").stdout
