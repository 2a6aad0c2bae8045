"""LlamaStoreFactory: a store per test in numbered run folders, the keep policy, pruning."""

from __future__ import annotations

import pytest
from summary import kept_stores


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--llama-keep-store"], {"test_ok0", "test_bad0"}),
        (["--llama-keep-store=all"], {"test_ok0", "test_bad0"}),
        (["--llama-keep-store=none"], set()),
        (["--llama-keep-store=failed", "-o", "llama_keep_store=all"], {"test_bad0"}),
        (["-o", "llama_keep_store=all"], {"test_ok0", "test_bad0"}),
        (["-o", "llama_keep_store=none"], set()),
        (["-o", "llama_keep_store=failed"], {"test_bad0"}),
    ],
)
@pytest.mark.both_backends
def test_keep_policies(pytester: pytest.Pytester, args: list[str], expected: set[str]) -> None:
    pytester.makepyfile(
        """
        def test_ok(llama_store):
            pass
        def test_bad(llama_store):
            assert False
        """
    )
    result = pytester.runpytest(*args)
    assert {p.name for p in kept_stores(result)} == expected
    base = pytester.path / "stores"
    result = pytester.runpytest("--llama-store-dir", str(base), *args)
    on_disk = {p.name for p in base.glob("run-*/*") if p.is_dir()}
    assert on_disk == expected


@pytest.mark.both_backends
def test_errors_in_setup_or_teardown_count_as_failed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        @pytest.fixture
        def broken_setup(llama_store):
            raise RuntimeError("setup broke")
        @pytest.fixture
        def broken_teardown(llama_store):
            yield
            raise RuntimeError("teardown broke")
        def test_setup_error(broken_setup):
            pass
        def test_teardown_error(broken_teardown):
            pass
        def test_ok(llama_store):
            pass
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=2, errors=2)
    names = {p.name for p in kept_stores(result)}
    assert names == {"test_setup_error0", "test_teardown_error0"}


def test_xdist_workers_get_their_own_folder_under_a_chosen_store_dir(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        import pytest
        @pytest.mark.parametrize("n", range(4))
        def test_it(llama_store, n):
            pass
        """
    )
    base = pytester.path / "stores"
    result = pytester.runpytest_subprocess(
        "-n", "2", "--llama-store-dir", str(base), "--llama-keep-store"
    )
    result.assert_outcomes(passed=4)
    workers = {p.parent.name for p in kept_stores(result)}
    assert workers == {"gw0", "gw1"}
    assert {p.parent.parent for p in kept_stores(result)} == {base / "run-0"}


def test_old_runs_are_pruned_but_foreign_folders_are_never_deleted(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile("def test_it(llama_store): pass")
    base = pytester.path / "stores"
    (base / "run-99-not-ours").mkdir(parents=True)
    (base / "run-7").mkdir()  # looks like a run, but has no marker: not ours
    (base / "notes.txt").write_text("user data")
    for _ in range(5):
        pytester.runpytest(
            "--llama-store-dir",
            str(base),
            "--llama-keep-store",
            "-o",
            "llama_store_retention_count=2",
        )
    # Numbering continues after the highest run-N name (run-7), pruning keeps the newest two.
    assert {p.name for p in base.iterdir()} == {
        ".llamastate.lock",
        "notes.txt",
        "run-7",
        "run-99-not-ours",
        "run-11",
        "run-12",
    }


def test_passing_run_leaves_no_empty_run_folder_behind(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_it(llama_store): pass")
    base = pytester.path / "stores"
    pytester.runpytest("--llama-store-dir", str(base)).assert_outcomes(passed=1)
    assert list(base.glob("run-*")) == []


def test_factory_makes_module_scoped_stores(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import os, pytest
        @pytest.fixture(scope="module")
        def shared(llama_store_factory):
            store = llama_store_factory.mktemp("shared")
            with store.activate():
                yield store
        def test_one(shared):
            (shared.path / "one").write_text("1")
        def test_two(shared):
            assert (shared.path / "one").exists()
            assert os.environ["SQLITE_STORE_DIR"] == str(shared.path)
        def test_function_store_wins_inside(shared, llama_store):
            assert os.environ["SQLITE_STORE_DIR"] == str(llama_store.path)
        """
    )
    result = pytester.runpytest("--llama-keep-store")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["shared: *shared0"])
