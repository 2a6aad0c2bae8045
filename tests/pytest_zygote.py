"""``pytest`` runs forked from one process that imported pytest, the plugin and the stack.

A reader who types ``pytest test_x.py`` pays the stack's import each time: about 5 s of
CPU on llama-stack 0.7, 8 s on OGX 1.5, most of what a docs example costs. The docs suite
types it some fifty times, so a page's runs fork from one process (the zygote), started in
the page's folder with the page's environment, that imported what every one of those runs
imports first. Each run is still a process of its own: its test files, conftest, pytest's
and the plugin's state are new in each, and it ends as ``pytest`` ends (``atexit`` hooks
and all); only modules imported before the first run are shared, imported with the same
environment the run would have had.

``python pytest_zygote.py`` is the zygote: a JSON request per line on stdin (``args``,
``output``: the file the run's stdout and stderr go to), a JSON answer per line on stdout
(``pid`` when forked, then ``code``).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any


def preimport_stack() -> None:
    """The stack imported (:func:`import_stack`) on llama-stack 0.4.3 and later and OGX."""
    from pytest_llamastate.releases import detect

    flavor = detect()
    if flavor.installed() and flavor.sqlstore_module and not flavor.support_problem():
        import_stack()


def import_stack() -> None:
    """What a stack on the plugin's default config imports, beyond the library client (a
    test on an older line whose in-process runs start stacks calls it itself)."""
    from pytest_llamastate.releases import detect, import_quietly

    flavor = detect()
    import_quietly(flavor.library_module)
    # The default config's files provider stores through SQLAlchemy, which the library
    # client alone does not import.
    if flavor.sqlstore_module:
        import_quietly(flavor.sqlstore_module.rpartition(".")[0] + ".sqlalchemy_sqlstore")
    elif flavor.sqlalchemy_module:
        import_quietly(flavor.sqlalchemy_module)
    import_quietly(f"{flavor.package}.providers.inline.files.localfs.files")


class Zygote:
    """The zygote of one folder and environment; ``run`` is one ``pytest`` run."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self._process = subprocess.Popen(
            [sys.executable, __file__],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(self, args: list[str], output: Path, timeout: float) -> int:
        """Run ``pytest *args``; its output goes to ``output``; returns its exit code."""
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        self._process.stdin.write(json.dumps({"args": args, "output": str(output)}) + "\n")
        self._process.stdin.flush()
        deadline = time.monotonic() + timeout
        pid = _answer(self._process.stdout, deadline)["pid"]
        try:
            return int(_answer(self._process.stdout, deadline)["code"])
        except TimeoutError:
            os.kill(pid, signal.SIGKILL)
            raise

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        self._process.wait(timeout=60)


def _answer(stream: IO[str], deadline: float) -> dict[str, Any]:
    if not select.select([stream], [], [], max(0.0, deadline - time.monotonic()))[0]:
        raise TimeoutError("the pytest run did not end in time")
    line = stream.readline()
    if not line:
        raise RuntimeError("the pytest zygote died")
    answer: dict[str, Any] = json.loads(line)
    return answer


def _serve() -> None:
    import pytest

    import pytest_llamastate.plugin  # noqa: F401  (the entry point's module)

    preimport_stack()
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            _child(pytest, request["args"], request["output"])
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"code": os.waitstatus_to_exitcode(status)}), flush=True)


def _child(pytest: Any, args: list[str], output: str) -> None:
    """Become ``python -m pytest *args`` run in this folder, writing to ``output``."""
    out = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    sys.argv = ["pytest", *args]
    sys.path[0] = os.getcwd()  # as ``python -m`` puts it
    # pytest warns that it cannot rewrite the asserts of plugins imported before it ran
    # (this one, anyio): a run of its own imports them after, and does not warn.
    code = pytest.main(["-W", "ignore::pytest.PytestAssertRewriteWarning", *args])
    sys.exit(int(code))


if __name__ == "__main__":
    _serve()
