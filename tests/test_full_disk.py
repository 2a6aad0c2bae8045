"""OS errors making a store (here: a full disk, a real 1 MB tmpfs as --llama-store-dir) are
one-line test errors naming the path and the cause; later tests still run."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_llamastate import LlamaStore


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


#: Fills the small disk from inside a test; ``room`` bytes are then given back.
FILL = """
import os

def fill(disk, room=0):
    filler = os.path.join(disk, "filler")
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while True:
            os.write(fd, b"x" * 4096)
    except OSError:
        pass
    os.close(fd)
    os.truncate(filler, max(0, os.path.getsize(filler) - room))
"""


@pytest.mark.both_backends
def test_a_full_store_dir_is_one_line_per_test_and_later_tests_run(
    pytester: pytest.Pytester, small_disk: Path
) -> None:
    pytester.makepyfile(
        fill=FILL,
        test_a_full_store_dir_is_one_line_per_test_and_later_tests_run=f"""
        from fill import fill

        def test_0_fill():
            fill("{small_disk}")

        def test_a(llama_store):
            pass

        def test_b(llama_store):
            pass

        def test_z_plain():
            pass
        """,
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


@pytest.mark.sqlite_only  # the template copy and the persistent store's rows are files here
def test_a_disk_full_mid_run_loses_no_kept_or_persistent_store_and_each_error_is_a_line(
    pytester: pytest.Pytester, small_disk: Path
) -> None:
    """Stores and persistent stores on a 1 MB tmpfs that a test fills: a failed test's
    store is kept whole, a state template copy that does not fit, a persistent store met
    on a full disk and a new one that cannot be made each give one line naming the path
    and the cause, the persistent store's rows survive, and later tests run."""
    pytester.makeconftest(
        """
        from pytest_llamastate import llama_template

        @llama_template("tpl")
        def tpl(stack):
            stack.register_toolgroup("mcp::tpl", mcp_endpoint="http://127.0.0.1:9/tpl")
        """
    )
    pytester.makepyfile(
        fill=FILL,
        test_disk=f"""
        import pytest
        from fill import fill

        DISK = {str(small_disk)!r}

        @pytest.mark.persistent("p")
        def test_0_persistent(llama_stack):
            llama_stack.register_toolgroup("mcp::p", mcp_endpoint="http://127.0.0.1:9/p")

        def test_1_fills_the_disk_and_fails(llama_stack):
            llama_stack.register_toolgroup("mcp::k", mcp_endpoint="http://127.0.0.1:9/k")
            fill(DISK)
            assert False, "failed on a full disk"

        def test_2_room_for_a_marker_only():
            fill(DISK, room=8192)

        @pytest.mark.llama_template("tpl")
        def test_3_template_copy(llama_store):
            pass

        def test_4_room_for_a_marker_only():
            fill(DISK, room=4096)

        def test_5_stack(llama_stack):
            pass

        def test_6_full():
            fill(DISK)

        @pytest.mark.persistent("p")
        def test_7_persistent_again(llama_stack):
            assert [t.identifier for t in llama_stack.toolgroups()] == ["mcp::p"]

        @pytest.mark.persistent("q")
        def test_8_new_persistent(llama_store):
            pass

        def test_9_plain():
            pass
        """,
    )
    persist = small_disk / "persist"
    args = [
        "-p", "no:randomly", "-p", "no:cacheprovider",
        f"--llama-store-dir={small_disk}/stores", f"--llama-persist-dir={persist}",
    ]  # fmt: skip
    result = pytester.runpytest(*args)
    lines = result.outlines

    def errors_of(test: str) -> list[str]:
        found = (
            i for i, line in enumerate(lines) if line.strip("_ ") == f"ERROR at setup of {test}"
        )
        return [lines[i + 1] for i in found]

    def error_of(test: str) -> str:
        [line] = errors_of(test)
        return line

    # A WAL store (OGX 1.5) cannot be checked on a full disk: its -shm file cannot grow.
    reopened = errors_of("test_7_persistent_again")
    result.assert_outcomes(passed=6 - len(reopened), failed=1, errors=3 + len(reopened))
    text = result.stdout.str()
    assert "INTERNALERROR" not in text
    assert "Traceback" not in text
    assert "corrupt" not in text  # a full disk is not a damaged store: no reset offered
    stores = small_disk / "stores"

    enospc = ": No space left on device (ENOSPC)"
    at, tail = re.escape(str(stores)), re.escape(enospc)
    # a copy names where it was going; a write that names no file, the store
    assert re.fullmatch(
        rf"llama_store: cannot make the test's store: \S+/tpl-\w+/\S+ -> {at}/\S+/test_3_template_copy0/\S+{tail}",
        error_of("test_3_template_copy"),
    )
    assert re.fullmatch(
        rf"llama_stack: cannot start: {at}/\S+/test_5_stack0{tail}",
        error_of("test_5_stack"),
    )
    assert error_of("test_8_new_persistent") == (
        f"llama_store: cannot open persistent store 'q': {persist}/q/.llamastate.json{enospc}"
    )
    for line in reopened:
        assert re.fullmatch(
            rf"llama_store: cannot open persistent store 'p': {re.escape(str(persist))}/p/\S+: "
            r"(disk I/O error \(EIO\)|database or disk is full \(ENOSPC\))",
            line,
        )
    # nothing kept or persistent was lost
    [kept] = [
        line.split(": ", 1)[1] for line in lines if "::test_1_fills_the_disk_and_fails: " in line
    ]
    assert [t.identifier for t in LlamaStore.open(Path(kept)).toolgroups()] == ["mcp::k"]
    assert [t.identifier for t in LlamaStore.open(persist / "p").toolgroups()] == ["mcp::p"]
    # room again: the store that could not be made is made by the next run
    (small_disk / "filler").unlink()
    pytester.runpytest(*args, "-k", "new_persistent or persistent_again").assert_outcomes(passed=2)


@pytest.mark.flavor_neutral
def test_a_full_disk_under_the_throwaway_postgres_is_one_line_per_test(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As root the plugin's own Postgres keeps its data under the system temp folder: put
    that on an 80 MB tmpfs and fill it mid-run. Each later test that needs a database
    errors with one line naming the cause and the data folder (Postgres refuses the write,
    or stops, PANICking, and the line quotes its log); the session ends cleanly, and with
    room again the next run finds the persistent store's rows."""
    if os.geteuid() != 0:
        pytest.skip("as root only: the data folder follows the system temp folder")
    pytest.importorskip("asyncpg")
    from pytest_llamastate.storage.postgres.server import find_binaries

    if find_binaries() is None:
        pytest.skip("no Postgres binaries")
    disk = Path(tempfile.mkdtemp(prefix="llamastate-full-pg-"))  # one pgserver reaches
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=80m,mode=0711", "tmpfs", str(disk)],
        capture_output=True,
    )
    if done.returncode:
        disk.rmdir()
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    monkeypatch.setenv("TMPDIR", str(disk))  # the inner run's system temp folder
    pytester.makepyfile(
        fill=FILL.replace('b"x" * 4096', 'b"x" * 65536'),
        test_pg=f"""
        import pytest
        from fill import fill

        @pytest.mark.persistent("p")
        def test_0_persistent(llama_stack):
            if not llama_stack.toolgroups():
                llama_stack.register_toolgroup("mcp::p", mcp_endpoint="http://127.0.0.1:9/p")
            assert [t.identifier for t in llama_stack.toolgroups()] == ["mcp::p"]

        def test_1_fill():
            fill({str(disk)!r})

        def test_2_store(llama_store):
            pass

        def test_3_stack(llama_stack):
            pass

        def test_4_plain():
            pass
        """,
    )
    args = ("-p", "no:randomly", "-p", "no:cacheprovider", "--llama-backend=postgres")
    try:
        result = pytester.runpytest_subprocess(*args)
        data = (pytester.path / ".pytest_cache/d/llamastate/.postgres/pgdata").resolve()
        assert data.is_relative_to(disk)  # the server's data was on the full disk
        result.assert_outcomes(passed=3, errors=2)
        text = result.stdout.str() + result.stderr.str()
        assert "INTERNALERROR" not in text
        assert "Traceback" not in text
        lines = result.outlines
        for test in ("test_2_store", "test_3_stack"):
            [at] = [i for i, x in enumerate(lines) if x.strip("_ ") == f"ERROR at setup of {test}"]
            line, after = lines[at + 1], lines[at + 2]
            assert "No space left on device" in line, line
            assert f"(data folder: {data}" in line, line
            assert after.startswith(("_", "=")), after  # one line
        (disk / "filler").unlink()
        again = pytester.runpytest_subprocess(*args, "-k", "test_0")
        again.assert_outcomes(passed=1)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
        disk.rmdir()
