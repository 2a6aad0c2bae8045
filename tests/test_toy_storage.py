"""A third storage backend is one module and one table line: the store tests pass on the
toy backend of ``toy_storage`` (SQLite files in a subfolder the stack finds through a
variable of its own), with no change above the storage folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from flavors import FLAVOR

#: What this shows (no layer above ``storage`` knows a backend exists; the toy is SQLite
#: files in a subfolder) does not differ by flavor: `make test` shows it once, on
#: llama-stack (it costs about a minute of CPU per run).
pytestmark = pytest.mark.skipif(
    FLAVOR.name == "ogx", reason="the storage seam is flavor-neutral: shown on llama-stack"
)

TESTS = Path(__file__).parent
#: The store tests: a store per test, keep policies, seeds, persistent stores; less the
#: restart and crash soaks, which test stacks, not storage (they pass on it too, in minutes).
STORE_TESTS = ["test_stores.py", "test_seeds.py", "test_persistence.py"]
SOAKS = "not 200_restart_cycles and not hammering and not sigkill"


def test_the_store_tests_pass_on_a_toy_backend(tmp_path: Path) -> None:
    env = {**os.environ, "LLAMASTATE_TEST_BACKEND": "toy", "TMPDIR": str(tmp_path)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
            *(str(TESTS / name) for name in STORE_TESTS),
            "-k",
            SOAKS,
        ],
        cwd=TESTS.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in summary, summary
    assert not re.search(r"\b\d+ failed", summary), summary
