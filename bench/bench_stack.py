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

from pytest_llamastate import LlamaStackFactory, LlamaStore
from pytest_llamastate.stackconfig import DEFAULT_CONFIG

ROUNDS = 20
SERVER_ROUNDS = 3
SUITE_TESTS = 100


def _bare_library(store: Path) -> float:
    from llama_stack.core.library_client import LlamaStackAsLibraryClient

    os.environ["SQLITE_STORE_DIR"] = str(store)
    os.environ["PYTEST_CURRENT_TEST"] = "bench"  # as under pytest: no config print
    start = time.perf_counter()
    client = LlamaStackAsLibraryClient(str(DEFAULT_CONFIG))
    client.shutdown()
    return time.perf_counter() - start


def _plugin(factory: LlamaStackFactory, store: LlamaStore) -> float:
    start = time.perf_counter()
    factory.start(store).close()
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


def suite(tmp: Path) -> dict[str, float]:
    folder = tmp / "suite"
    folder.mkdir()
    (folder / "test_many.py").write_text(
        "import pytest\n"
        f"@pytest.mark.parametrize('n', range({SUITE_TESTS}))\n"
        "def test_it(llama_stack, n):\n"
        "    assert [t.identifier for t in llama_stack.toolgroups()] == []\n"
    )
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(folder)],
        check=True,
        capture_output=True,
    )
    return {"tests": SUITE_TESTS, "wall_s": round(time.perf_counter() - start, 2)}


def _bare_server(store: Path, port: int) -> float:
    llama = Path(sys.executable).with_name("llama")
    env = {**os.environ, "SQLITE_STORE_DIR": str(store)}
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


def server(tmp: Path) -> dict[str, float]:
    factory = LlamaStackFactory("server", DEFAULT_CONFIG)
    bare, plugin = [], []
    for n in range(SERVER_ROUNDS):
        bare.append(_bare_server(tmp / f"sbare{n}", 18300 + n))
        plugin.append(_plugin(factory, LlamaStore.create(tmp / f"splugin{n}")))
    b, p = statistics.median(bare), statistics.median(plugin)
    return {"bare_run_s": round(b, 3), "llama_stack_s": round(p, 3), "ratio": round(p / b, 3)}


def main() -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        return {
            "library": library(Path(tmp)),
            "suite_100_library": suite(Path(tmp)),
            "server": server(Path(tmp)),
        }


if __name__ == "__main__":
    print(main())
