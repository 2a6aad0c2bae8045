"""Per-test stacks: what the plugin adds on top of starting Llama Stack yourself.

library: ``llama_stack_factory.start(store)`` + ``close()`` against a bare
``LlamaStackAsLibraryClient(config)`` + ``shutdown()``, alternating in one process (import
paid once, before timing). suite: 100 tests, each with its own library stack, as one
pytest process. server: the plugin's server-mode stack against a bare ``llama stack run``
started, polled until healthy and stopped with SIGTERM.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from pytest_llamastate import LlamaStack, LlamaStackFactory, LlamaStore
from pytest_llamastate.state.stackconfig import DEFAULT_CONFIG
from pytest_llamastate.state.store import state_env

ROUNDS = 20
SERVER_ROUNDS = 10
SUITE_TESTS = 100
#: Tests of the server-mode suite, run beside the same suite in library mode.
SERVER_SUITE_TESTS = 50


def _bare_library(store: Path) -> float:
    from llama_stack.core.library_client import LlamaStackAsLibraryClient

    os.environ.update(state_env(store))  # every state root, as a user would set them
    os.environ["PYTEST_CURRENT_TEST"] = "bench"  # as under pytest: no config print
    start = time.perf_counter()
    client = LlamaStackAsLibraryClient(str(DEFAULT_CONFIG))
    client.shutdown()
    return time.perf_counter() - start


def _plugin(factory: LlamaStackFactory, store: LlamaStore) -> float:
    """Start, one call (as a test makes), stop."""
    start = time.perf_counter()
    with factory.start(store) as stack:
        stack.toolgroups()
    return time.perf_counter() - start


def library(tmp: Path) -> dict[str, float]:
    factory = LlamaStackFactory("library", DEFAULT_CONFIG)
    _bare_library(tmp / "warm")  # import and first-client costs, paid by both sides
    bare, plugin = [], []
    for n in range(ROUNDS):
        bare.append(_bare_library(tmp / f"bare{n}"))
        plugin.append(_plugin(factory, LlamaStore.create(tmp / f"plugin{n}")))
    b, p = statistics.median(bare), statistics.median(plugin)
    return {"bare_client_s": round(b, 4), "llama_stack_s": round(p, 4), "ratio": round(p / b, 3)}


def suite(tmp: Path, tests: int = SUITE_TESTS, *args: str) -> dict[str, float]:
    """``tests`` tests, each with its own stack, in one pytest process (import included)."""
    folder = tmp / f"suite-{tests}-{'-'.join(a.split('=')[-1] for a in args) or 'default'}"
    folder.mkdir()
    (folder / "test_many.py").write_text(
        "import pytest\n"
        f"@pytest.mark.parametrize('n', range({tests}))\n"
        "def test_it(llama_stack, n):\n"
        "    assert [t.identifier for t in llama_stack.toolgroups()] == []\n"
    )
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args, str(folder)],
        check=True,
        capture_output=True,
    )
    return {"tests": tests, "wall_s": round(time.perf_counter() - start, 2)}


def _bare_server(store: Path, port: int) -> float:
    llama = Path(sys.executable).with_name("llama")
    env = {**os.environ, **state_env(store)}
    start = time.perf_counter()
    proc = subprocess.Popen(
        [str(llama), "stack", "run", str(DEFAULT_CONFIG), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=1):
                break
        except OSError:
            time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait()
    return time.perf_counter() - start


def _restart(stack: LlamaStack) -> float:
    start = time.perf_counter()
    stack.restart()
    return time.perf_counter() - start


def server(tmp: Path) -> dict[str, float]:
    """A server-mode stack per test (start to healthy, one client call, stop), with
    ``fork`` and ``exec``, against a bare ``llama stack run`` start+stop, alternating."""
    fork = LlamaStackFactory("server", DEFAULT_CONFIG, server_process="fork")
    exec_ = LlamaStackFactory("server", DEFAULT_CONFIG, server_process="exec")
    _plugin(fork, LlamaStore.create(tmp / "swarm"))  # the zygote's import, paid once
    bare, forked, execed = [], [], []
    for n in range(SERVER_ROUNDS):
        bare.append(_bare_server(tmp / f"sbare{n}", 18300 + n))
        forked.append(_plugin(fork, LlamaStore.create(tmp / f"sfork{n}")))
        execed.append(_plugin(exec_, LlamaStore.create(tmp / f"sexec{n}")))
    with fork.start(LlamaStore.create(tmp / "srestart")) as stack:
        restarts = [_restart(stack) for _ in range(SERVER_ROUNDS)]
    b, f, e = (statistics.median(x) for x in (bare, forked, execed))
    return {
        "rounds": SERVER_ROUNDS,
        "bare_run_s": round(b, 3),
        "fork_s": round(f, 3),
        "fork_ratio": round(f / b, 3),
        "exec_s": round(e, 3),
        "exec_ratio": round(e / b, 3),
        "fork_restart_s": round(statistics.median(restarts), 3),
    }


def main() -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        return {
            "library": library(Path(tmp)),
            "suite_100_library": suite(Path(tmp)),
            "server": server(Path(tmp)),
            "suite_50_library": suite(Path(tmp), SERVER_SUITE_TESTS),
            "suite_50_server_fork": suite(
                Path(tmp), SERVER_SUITE_TESTS, "--llama-stack-mode=server"
            ),
        }


if __name__ == "__main__":
    print(main())
