"""The core plugin, driven the way users drive it: through pytest runs (pytester)."""

from __future__ import annotations

import os

import pytest
from summary import kept_stores

STATE_VARS = (
    "SQLITE_STORE_DIR",
    "FILES_STORAGE_DIR",
    "MILVUS_DB_PATH",
    "LLAMA_STACK_CONFIG_DIR",
    "OGX_CONFIG_DIR",
)


def test_two_tests_do_not_share_a_store(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import os
        def test_a(llama_store):
            (llama_store.path / "written-by-a").write_text("a")
            assert os.environ["SQLITE_STORE_DIR"] == str(llama_store.path)
        def test_b(llama_store):
            assert not (llama_store.path / "written-by-a").exists()
            assert os.environ["SQLITE_STORE_DIR"] == str(llama_store.path)
        """
    )
    pytester.runpytest().assert_outcomes(passed=2)


@pytest.mark.parametrize(
    ("body", "outcome"),
    [
        ("pass", {"passed": 1}),
        ("assert False", {"failed": 1}),
        ("pytest.skip('no')", {"skipped": 1}),
        ("raise RuntimeError('boom')", {"failed": 1}),
    ],
)
def test_environment_is_restored_exactly_whatever_the_outcome(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, body: str, outcome: dict[str, int]
) -> None:
    monkeypatch.setenv("SQLITE_STORE_DIR", "/was-set")
    for name in STATE_VARS[1:]:
        monkeypatch.delenv(name, raising=False)
    pytester.makepyfile(
        f"""
        import os, pytest
        def test_it(llama_store):
            os.environ["SQLITE_STORE_DIR"] = "/changed-by-the-test"
            {body}
        """
    )
    pytester.inline_run().assertoutcome(**outcome)
    assert os.environ["SQLITE_STORE_DIR"] == "/was-set"
    assert not any(name in os.environ for name in STATE_VARS[1:])


def test_environment_is_restored_on_interrupt(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SQLITE_STORE_DIR", raising=False)
    pytester.makepyfile(
        """
        def test_it(llama_store):
            raise KeyboardInterrupt
        """
    )
    result = pytester.inline_run(no_reraise_ctrlc=True)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert "SQLITE_STORE_DIR" not in os.environ


@pytest.mark.both_backends
def test_failed_store_is_kept_named_in_report_and_summary(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_ok(llama_store):
            (llama_store.path / "f").write_text("x")
        def test_bad(llama_store):
            (llama_store.path / "f").write_text("x")
            assert False
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["*- llama store -*", "state of this test: *test_bad0", "*llama stores kept*"]
    )
    kept = kept_stores(result)
    assert [p.name for p in kept] == ["test_bad0"]
    assert (kept[0] / "f").read_text() == "x"
    assert not (kept[0].parent / "test_ok0").exists()


def test_kept_stores_from_xdist_workers_reach_the_summary(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        @pytest.mark.parametrize("n", range(4))
        def test_fail(llama_store, n):
            (llama_store.path / "mark").write_text(str(n))
            assert False
        @pytest.mark.parametrize("n", range(4))
        def test_pass(llama_store, n):
            pass
        """
    )
    result = pytester.runpytest_subprocess("-n", "2")
    result.assert_outcomes(passed=4, failed=4)
    kept = kept_stores(result)
    assert len(kept) == 4
    assert sorted((p / "mark").read_text() for p in kept) == ["0", "1", "2", "3"]
    assert {p.parent.parent.name for p in kept} <= {"popen-gw0", "popen-gw1"}


def test_report_header(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_it(): pass")
    result = pytester.runpytest("--llama-guard=warn")
    result.stdout.fnmatch_lines(
        [
            "llamastate: stores in <basetemp>/llamastate, keep=failed, guard=warn, "
            "stack mode=library, flavor=* *"
        ]
    )
