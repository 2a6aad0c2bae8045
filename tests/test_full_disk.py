"""OS errors making a store (here: a full disk, a real 1 MB tmpfs as --llama-store-dir) are
one-line test errors naming the path and the cause; later tests still run."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MB tmpfs (needs root and mount; skipped elsewhere)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True
    )
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.both_backends
def test_a_full_store_dir_is_one_line_per_test_and_later_tests_run(
    pytester: pytest.Pytester, small_disk: Path
) -> None:
    pytester.makepyfile(
        f"""
        import os

        def test_0_fill():
            fd = os.open("{small_disk}/filler", os.O_WRONLY | os.O_CREAT)
            try:
                while True:
                    os.write(fd, b"x" * 4096)
            except OSError:
                pass
            os.close(fd)

        def test_a(llama_store):
            pass

        def test_b(llama_store):
            pass

        def test_z_plain():
            pass
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", f"--llama-store-dir={small_disk}")
    result.assert_outcomes(passed=2, errors=2)
    assert "INTERNALERROR" not in result.stdout.str()
    # One line per test in the errors section (the short summary repeats them, cut to the
    # terminal's width unless CI is set).
    lines = [
        line
        for line in result.outlines
        if "No space left on device (ENOSPC)" in line and not line.startswith("ERROR ")
    ]
    assert len(lines) == 2, result.stdout.str()
    for line in lines:
        assert "llama_store: cannot make the test's store: " + str(small_disk) in line
    assert "Traceback" not in result.stdout.str()
