"""The leak guard's cost with a heavy home: 300 llama_store tests, 20,000 files in ~/.llama.

Developers who use Llama Stack have homes full of checkpoints and old distributions; a
guard that walks them around every test costs what they hold (48x here before inotify).
Whole pytest processes with the guard on and off alternate in the same run, against the
same fake HOME, and the medians are compared, so machine noise hits both sides alike. The
children's CPU time (user + system) is reported too: on a machine shared with other jobs it
varies less than the wall time.
"""

from __future__ import annotations

import os
import resource
import statistics
import tempfile
from pathlib import Path

from bench_core import run_pytest

TESTS = 300
ROUNDS = 3
FOLDERS = 400  # 20 distributions x 20 folders
FILES_PER_FOLDER = 50

SUITE = f"""
import pytest
@pytest.mark.parametrize("n", range({TESTS}))
def test_it(llama_store, n):
    (llama_store.path / "f").write_text("x")
"""


def _fill(llama: Path) -> int:
    files = 0
    for n in range(FOLDERS):
        folder = llama / f"distributions/d{n // 20}/providers{n % 20}"
        folder.mkdir(parents=True)
        for m in range(FILES_PER_FOLDER):
            (folder / f"chunk{m}.bin").write_bytes(b"x" * 64)
            files += 1
    return files


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(folder: Path, home: Path, guard: str) -> tuple[float, float]:
    env = {**os.environ, "HOME": str(home)}
    for name in ("LLAMA_STACK_CONFIG_DIR", "OGX_CONFIG_DIR"):
        env.pop(name, None)
    cpu = _cpu()
    wall = run_pytest(folder, [f"--llama-guard={guard}"], env)
    return wall, _cpu() - cpu


def main() -> dict[str, float | int]:
    with tempfile.TemporaryDirectory() as tmp:
        home, suite = Path(tmp, "home"), Path(tmp, "suite")
        files = _fill(home / ".llama")
        suite.mkdir()
        (suite / "test_bench.py").write_text(SUITE)
        runs: dict[str, list[tuple[float, float]]] = {"off": [], "error": []}
        for _ in range(ROUNDS):
            for guard, times in runs.items():
                times.append(_run(suite, home, guard))
    on_s, off_s = (statistics.median(t for t, _ in runs[g]) for g in ("error", "off"))
    on_cpu, off_cpu = (statistics.median(c for _, c in runs[g]) for g in ("error", "off"))
    return {
        "tests": TESTS,
        "home_files": files,
        "home_folders": FOLDERS,
        "cores": os.cpu_count() or 0,
        "guard_on_s": round(on_s, 3),
        "guard_off_s": round(off_s, 3),
        "ratio": round(on_s / off_s, 3),
        "guard_on_cpu_s": round(on_cpu, 3),
        "guard_off_cpu_s": round(off_cpu, 3),
        "cpu_ratio": round(on_cpu / off_cpu, 3),
    }


if __name__ == "__main__":
    print(main())
