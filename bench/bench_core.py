"""llama_store vs tmp_path + monkeypatch.setenv: 1000 tests, whole pytest processes.

The baseline is what users write today without the plugin (and runs with the plugin
disabled); both suites run alternately in the same run, and the median of several runs
is compared, so machine noise hits both sides alike.
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTS = 1000
ROUNDS = 5

PLUGIN_SUITE = f"""
import pytest
@pytest.mark.parametrize("n", range({TESTS}))
def test_it(llama_store, n):
    (llama_store.path / "f").write_text("x")
"""

BASELINE_SUITE = f"""
import pytest
VARS = ("SQLITE_STORE_DIR", "FILES_STORAGE_DIR", "MILVUS_DB_PATH",
        "LLAMA_STACK_CONFIG_DIR", "OGX_CONFIG_DIR")
@pytest.fixture
def store(tmp_path, monkeypatch):
    for name in VARS:
        monkeypatch.setenv(name, str(tmp_path))
    return tmp_path
@pytest.mark.parametrize("n", range({TESTS}))
def test_it(store, n):
    (store / "f").write_text("x")
"""


def run_pytest(
    folder: Path, extra: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> float:
    """Seconds one whole pytest process takes on ``folder`` (no cache, fixed order)."""
    return run_pytest_timed(folder, extra, env, cwd)[0]


def run_pytest_timed(
    folder: Path, extra: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[float, float]:
    """Wall and CPU seconds (user + system, its threads and children included) of one
    whole pytest process on ``folder``. CPU time scatters less on a shared machine."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
            *extra,
            str(folder),
        ],
        check=True,
        capture_output=True,
        env=env,
        cwd=cwd,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        plugin = Path(tmp, "plugin")
        baseline = Path(tmp, "baseline")
        for folder, text in ((plugin, PLUGIN_SUITE), (baseline, BASELINE_SUITE)):
            folder.mkdir()
            (folder / "test_bench.py").write_text(text)
        times: dict[str, list[float]] = {"plugin": [], "baseline": []}
        for _ in range(ROUNDS):
            times["baseline"].append(run_pytest(baseline, ["-p", "no:llamastate"]))
            times["plugin"].append(run_pytest(plugin, []))
    plugin_s = statistics.median(times["plugin"])
    baseline_s = statistics.median(times["baseline"])
    return {
        "tests": TESTS,
        "llama_store_s": round(plugin_s, 3),
        "tmp_path_monkeypatch_s": round(baseline_s, 3),
        "ratio": round(plugin_s / baseline_s, 3),
    }


if __name__ == "__main__":
    print(main())
