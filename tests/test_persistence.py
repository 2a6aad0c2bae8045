"""@pytest.mark.persistent: named stores that survive tests and runs, safely."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from flavors import FLAVOR, skip_module_without_a_stack

skip_module_without_a_stack()
pytestmark = pytest.mark.both_backends

REGISTER_ONE_MORE = """
import pytest

@pytest.mark.persistent("soak")
def test_register(llama_stack):
    n = len(llama_stack.toolgroups())
    llama_stack.register_toolgroup(f"mcp::{n}", mcp_endpoint="http://127.0.0.1:9/x")
    print("COUNT", n + 1)
"""


def test_state_survives_across_runs_and_resets_on_request(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(REGISTER_ONE_MORE)
    first = pytester.runpytest("-s")
    first.stdout.fnmatch_lines(
        ["*COUNT 1*", "soak: */.pytest_cache/d/llamastate/soak (created, used by 1 test(s))"]
    )
    pytester.runpytest("-s").stdout.fnmatch_lines(["*COUNT 2*", "*soak: * (reused, *"])
    pytester.runpytest("-s", "--llama-reset-persistent=other").stdout.fnmatch_lines(["*COUNT 3*"])
    pytester.runpytest("-s", "--llama-reset-persistent=soak").stdout.fnmatch_lines(
        ["*COUNT 1*", "*soak: * (reset, *"]
    )
    pytester.runpytest("-s").stdout.fnmatch_lines(["*COUNT 2*"])
    pytester.runpytest("-s", "--cache-clear").stdout.fnmatch_lines(["*COUNT 1*", "*(created, *"])


def test_reset_applies_once_per_run_even_with_many_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        REGISTER_ONE_MORE
        + """
@pytest.mark.persistent("soak")
def test_register_again(llama_stack):
    test_register.__wrapped__(llama_stack) if hasattr(test_register, "__wrapped__") else None
    assert len(llama_stack.toolgroups()) == 1
"""
    )
    pytester.runpytest("-s", "-p", "no:randomly").assert_outcomes(passed=2)
    result = pytester.runpytest("-s", "-p", "no:randomly", "--llama-reset-persistent")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*COUNT 1*"])


def test_a_fingerprint_change_rebuilds_the_store(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(REGISTER_ONE_MORE)
    pytester.runpytest("-s").stdout.fnmatch_lines(["*COUNT 1*"])
    config = pytester.path / "other.yaml"
    minimal = FLAVOR.default_config
    config.write_text(minimal.read_text().replace("pytest-llamastate", "changed-distro"))
    result = pytester.runpytest("-s", f"--llama-stack-config={config}")
    result.stdout.fnmatch_lines(["*COUNT 1*", "*soak: * (rebuilt, *"])


def test_seeds_apply_once_when_the_store_is_created(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.persistent("seeded")
        @pytest.mark.llama_toolgroups({"toolgroup_id": "mcp::seed", "mcp_endpoint": "http://h/s"})
        def test_it(llama_stack):
            ids = [t.identifier for t in llama_stack.toolgroups()]
            print("IDS", ids)
            if ids:
                llama_stack.unregister_toolgroup("mcp::seed")
        """
    )
    pytester.runpytest("-s").stdout.fnmatch_lines(["*IDS ?'mcp::seed'?*"])
    pytester.runpytest("-s").stdout.fnmatch_lines(["*IDS ??"])


def test_default_name_is_the_module_and_marker_works_on_a_class(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_mod="""
        import pytest

        @pytest.mark.persistent
        class TestSoak:
            def test_one(self, llama_store):
                (llama_store.path / "note").write_text("1")

            def test_two(self, llama_store):
                assert (llama_store.path / "note").read_text() == "1"
                assert llama_store.label == "test_mod"
        """
    )
    pytester.runpytest("-p", "no:randomly").assert_outcomes(passed=2)
    assert (pytester.path / ".pytest_cache/d/llamastate/test_mod/note").exists()


@pytest.mark.sqlite_only
def test_persist_dir_option(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(REGISTER_ONE_MORE)
    target = pytester.path / "keep-here"
    pytester.runpytest("--llama-persist-dir", str(target)).assert_outcomes(passed=1)
    assert (target / "soak" / "kvstore.db").exists()
    assert not (pytester.path / ".pytest_cache/d/llamastate/soak").exists()


@pytest.mark.sqlite_only
def test_a_corrupt_store_errors_with_the_reset_command_and_is_kept(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(REGISTER_ONE_MORE)
    pytester.runpytest().assert_outcomes(passed=1)
    db = pytester.path / ".pytest_cache/d/llamastate/soak/kvstore.db"
    db.write_bytes(b"this is not a database" * 100)
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "*persistent store 'soak' is corrupt:*",
            f"*{db}: *",
            "*reset it with: pytest --llama-reset-persistent=soak  (or: llamastate reset soak)*",
        ]
    )
    assert db.read_bytes().startswith(b"this is not a database")
    pytester.runpytest("--llama-reset-persistent=soak").assert_outcomes(passed=1)


@pytest.mark.sqlite_only
def test_a_store_broken_during_the_test_fails_its_integrity_check(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.persistent("fragile")
        def test_it(llama_store):
            from pytest_llamastate.storage.sqlite import write_entries
            write_entries(llama_store.kvstore_path, {"k": "v"})
            with open(llama_store.kvstore_path, "r+b") as db:
                db.seek(100)
                db.write(b"\\xff" * 3000)
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*persistent store 'fragile' failed its integrity check:*"])


@pytest.mark.flavor_neutral
def test_200_restart_cycles_lose_nothing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from pytest_llamastate import restart_cycles

        @pytest.mark.persistent("cycles")
        def test_soak(llama_stack):
            def register(stack, cycle):
                stack.register_toolgroup(f"mcp::c{cycle}", mcp_endpoint="http://127.0.0.1:9/x")
            ids = restart_cycles(llama_stack, 200, before_restart=register)
            assert len(ids) == 200
        """
    )
    pytester.runpytest().assert_outcomes(passed=1)
    from pytest_llamastate import LlamaStore

    store = LlamaStore.open(pytester.path / ".pytest_cache/d/llamastate/cycles")
    assert len(store.toolgroups()) == 200


@pytest.mark.sqlite_only
def test_restart_cycles_names_what_went_missing(tmp_path: Path) -> None:
    from pytest_llamastate import LlamaStack, LlamaStackFactory, LlamaStore, restart_cycles
    from pytest_llamastate.state.stackconfig import DEFAULT_CONFIG

    store = LlamaStore.create(tmp_path / "s")
    with LlamaStackFactory("library", DEFAULT_CONFIG).start(store) as stack:
        stack.register_toolgroup("mcp::kept", mcp_endpoint="http://127.0.0.1:9/x")

        def lose(s: LlamaStack, cycle: int) -> None:
            s.register_toolgroup("mcp::lost", mcp_endpoint="http://127.0.0.1:9/y")
            # Delete the row behind the stack's back, as a broken store would.
            from pytest_llamastate.state.registry import installed_format
            from pytest_llamastate.storage.sqlite import write_entries

            write_entries(
                store.kvstore_path, {installed_format().key("tool_group", "mcp::lost"): None}
            )

        with pytest.raises(AssertionError, match=r"after restart 1 of 3 .* gone: mcp::lost"):
            restart_cycles(stack, 3, before_restart=lose)


def test_sigkill_mid_registration_loses_nothing_committed(
    pytester: pytest.Pytester, inner_args: list[str]
) -> None:
    progress = pytester.path / "progress.txt"
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.persistent("crash")
        def test_forever(llama_stack):
            for n in range(10_000):
                llama_stack.register_toolgroup(f"mcp::{{n}}", mcp_endpoint="http://127.0.0.1:9/x")
                with open({str(progress)!r}, "a") as f:
                    f.write(f"mcp::{{n}}\\n")
        """
    )
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "--llama-persist-dir",
            str(pytester.path / "persist"),
            *inner_args,
        ],
        cwd=pytester.path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not progress.exists() or len(progress.read_text().split()) < 20:
        assert child.poll() is None, "the child run ended before it was killed"
        assert time.monotonic() < deadline, "the child run registered too little"
        time.sleep(0.05)
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    committed = progress.read_text().split()
    pytester.makepyfile(
        test_after=f"""
        import pytest

        @pytest.mark.persistent("crash")
        def test_after(llama_stack):
            listed = {{t.identifier for t in llama_stack.toolgroups()}}
            assert set({committed!r}) <= listed
        """
    )
    result = pytester.runpytest(
        "test_after.py",
        "--llama-persist-dir",
        str(pytester.path / "persist"),
        "-o",
        "llama_persist_lock_timeout=30",
    )
    result.assert_outcomes(passed=1)


@pytest.mark.flavor_neutral
def test_xdist_workers_hammering_one_store_are_serialized(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import os
        import pytest

        @pytest.mark.persistent("shared")
        def test_hammer(llama_stack):
            worker = os.environ["PYTEST_XDIST_WORKER"]
            for n in range(15):
                llama_stack.register_toolgroup(f"mcp::{worker}-{n}", mcp_endpoint="http://h/x")
                if n % 5 == 4:
                    llama_stack.restart()
        """
    )
    result = pytester.runpytest_subprocess("-n", "2", "--dist", "each")
    result.assert_outcomes(passed=2)
    assert "database is locked" not in result.stdout.str()
    from pytest_llamastate import LlamaStore

    ids = {
        t.identifier
        for t in LlamaStore.open(pytester.path / ".pytest_cache/d/llamastate/shared").toolgroups()
    }
    assert ids == {f"mcp::gw{w}-{n}" for w in (0, 1) for n in range(15)}


def test_a_failing_store_created_hook_does_not_leave_the_store_locked(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(
        """
        FAILED = []

        def pytest_llamastate_store_created(store, request):
            if not FAILED:
                FAILED.append(1)
                raise RuntimeError("hook broke")
        """
    )
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.persistent("locked")
        def test_first(llama_store):
            pass

        @pytest.mark.persistent("locked")
        def test_second(llama_store):
            pass
        """
    )
    result = pytester.runpytest("-p", "no:randomly", "-o", "llama_persist_lock_timeout=5")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*RuntimeError: hook broke*"])
    assert "stayed locked" not in result.stdout.str()
