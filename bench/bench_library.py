"""One more library-stack test against one more bare library client, whole pytest processes.

Each side is a suite of N tests, run as one pytest process with N1 and with N2 tests;
the difference over N2 - N1 is what one more test costs, with imports, collection and
start-up cancelled out. A test starts a stack, makes one call through the flavor's own
client (``client.files.list()``, through the library client's route table) and stops it:

- ``plugin``: the ``llama_stack`` fixture (its own store, library mode, default config);
- ``bare``: the flavor's ``LlamaStackAsLibraryClient`` (OGX: ``OGXAsLibraryClient``) on
  the same config in ``tmp_path`` with every state root pointed there, started and
  stopped as that release's users do (``initialize()`` before 0.2.19, ``shutdown()`` from
  0.4.3: the release table's ``library_start`` / ``library_stop``); the plugin disabled
  (``-p no:llamastate``), as a suite without it runs.

The four processes of a round run back to back, the sides alternating; the ratio is the
median over rounds of each round's ratio (and the ratio of the sides' median costs, which
a loaded machine scatters less), in wall time (what the issue asks) and in CPU
time (user + system of the whole process; it scatters far less when other jobs share the
cores). Beside it, each test of the N2 processes is timed from inside (a ``conftest.py``:
start of its setup to end of its teardown, wall and the process's CPU), the first test
of each process left out (it pays the imports): the median test of each side and their
ratio. Where the two disagree, the difference is spent outside the tests (collection,
session teardown, exit), which the process figure counts and the per-test one does not.

Run with the venv of the release to measure (``.venv/bin/python
bench/bench_library.py``, ``.venv-ogx/bin/python ...``; an older line's venv with
``PYTHONPATH=$PWD``). ``BENCH_ROUNDS``, ``BENCH_N1``, ``BENCH_N2`` change the sizes.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_core import run_pytest_timed

from pytest_llamastate.releases import detect, library_shortcuts

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
N1, N2 = int(os.environ.get("BENCH_N1", "5")), int(os.environ.get("BENCH_N2", "45"))
FLAVOR = detect()

PLUGIN_SUITE = """
import pytest
@pytest.mark.parametrize("n", range({tests}))
def test_it(llama_stack, n):
    assert llama_stack.client.files.list() is not None
"""

BARE_SUITE = """
import pytest
from pytest_llamastate.state.store import state_env
from {module} import {client}
CONFIG = {config!r}
@pytest.fixture
def client(tmp_path, monkeypatch):
    for name, value in state_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    client = {client}(CONFIG)
{start}    yield client
{stop}@pytest.mark.parametrize("n", range({tests}))
def test_it(client, n):
    assert client.files.list() is not None
"""


#: Times each test from the inside: wall and process CPU from the start of its setup to
#: the end of its teardown, one JSON line per test in ``tests.jsonl``.
TIMING_CONFTEST = """
import json, time
from pathlib import Path
_OUT, _START = Path(__file__).with_name("tests.jsonl"), {}
def pytest_runtest_logstart(nodeid):
    _START[nodeid] = (time.perf_counter(), time.process_time())
def pytest_runtest_logfinish(nodeid):
    wall, cpu = _START.pop(nodeid)
    with _OUT.open("a") as out:
        out.write(json.dumps([time.perf_counter() - wall, time.process_time() - cpu]) + "\\n")
"""


def _suite(folder: Path, text: str, tests: int) -> Path:
    folder.mkdir()
    (folder / "test_bench.py").write_text(text.format(tests=tests, **_names()))
    (folder / "conftest.py").write_text(TIMING_CONFTEST)
    return folder


def _per_test(folder: Path) -> list[tuple[float, float]]:
    """The (wall, cpu) of each test of the last run on ``folder`` but its first."""
    lines = (folder / "tests.jsonl").read_text().splitlines()
    (folder / "tests.jsonl").unlink()
    return [tuple(json.loads(line)) for line in lines[1:]]


def _names() -> dict[str, str]:
    return {
        "module": FLAVOR.library_module,
        "client": FLAVOR.library_client,
        "config": str(FLAVOR.default_config),
        "start": "" if FLAVOR.library_start == "constructor" else "    client.initialize()\n",
        "stop": "    client.shutdown()\n" if FLAVOR.library_stop == "shutdown" else "",
    }


def home_size() -> str:
    """Files in the stack's home folder (``~/.llama``, ``~/.ogx``): the guard watches it."""
    home = Path.home() / FLAVOR.home
    files = sum(len(names) for _, _, names in os.walk(home)) if home.is_dir() else 0
    return f"{files} files in {home}"


def main() -> dict[str, object]:
    #: Per clock (wall, cpu) and side, one more test's seconds in each round.
    marginal = {(clock, side): [] for clock in ("wall", "cpu") for side in ("plugin", "bare")}
    ratios: dict[str, list[float]] = {"wall": [], "cpu": []}
    #: Per side, (wall, cpu) of every test of the N2 processes but each one's first.
    inside: dict[str, list[tuple[float, float]]] = {"plugin": [], "bare": []}
    load = []
    with tempfile.TemporaryDirectory() as tmp:
        suites = {
            (side, n): _suite(Path(tmp, f"{side}{n}"), text, n)
            for side, text in (("plugin", PLUGIN_SUITE), ("bare", BARE_SUITE))
            for n in (N1, N2)
        }
        for _ in range(ROUNDS):
            load.append(os.getloadavg()[0])
            for side, extra in (("bare", ["-p", "no:llamastate"]), ("plugin", [])):
                small = run_pytest_timed(suites[side, N1], extra)
                large = run_pytest_timed(suites[side, N2], extra)
                (suites[side, N1] / "tests.jsonl").unlink()
                inside[side] += _per_test(suites[side, N2])
                for i, clock in enumerate(("wall", "cpu")):
                    marginal[clock, side].append((large[i] - small[i]) / (N2 - N1))
            for clock in ratios:
                ratios[clock].append(marginal[clock, "plugin"][-1] / marginal[clock, "bare"][-1])
    result: dict[str, object] = {
        "release": f"{FLAVOR.name} {FLAVOR.version()}",
        "shortcuts": sorted(library_shortcuts(FLAVOR)),
        "tests": [N1, N2],
        "rounds": ROUNDS,
    }
    for i, clock in enumerate(("wall", "cpu")):
        result[f"{clock}_plugin_test_s"] = round(statistics.median(marginal[clock, "plugin"]), 4)
        result[f"{clock}_bare_client_test_s"] = round(statistics.median(marginal[clock, "bare"]), 4)
        result[f"{clock}_ratio"] = round(statistics.median(ratios[clock]), 3)
        result[f"{clock}_ratio_of_medians"] = round(
            statistics.median(marginal[clock, "plugin"])
            / statistics.median(marginal[clock, "bare"]),
            3,
        )
        result[f"{clock}_ratios"] = [round(r, 3) for r in ratios[clock]]
        plugin, bare = (
            statistics.median(t[i] for t in inside[side]) for side in ("plugin", "bare")
        )
        result[f"{clock}_in_process_plugin_test_s"] = round(plugin, 4)
        result[f"{clock}_in_process_bare_client_test_s"] = round(bare, 4)
        result[f"{clock}_in_process_ratio"] = round(plugin / bare, 3)
    return {
        **result,
        "cpus": os.cpu_count(),
        "load_avg_1min": [round(x, 1) for x in load],
        "home": home_size(),
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
