"""The core plugin, driven the way users drive it: through pytest runs (pytester)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

STATE_VARS = (
    "SQLITE_STORE_DIR",
    "FILES_STORAGE_DIR",
    "MILVUS_DB_PATH",
    "LLAMA_STACK_CONFIG_DIR",
    "OGX_CONFIG_DIR",
)


def kept_stores(result: pytest.RunResult) -> list[Path]:
    """The store paths the terminal summary lists under 'llama stores kept'."""
    lines = result.outlines
    if not any("llama stores kept" in line for line in lines):
        return []
    start = next(i for i, line in enumerate(lines) if "llama stores kept" in line) + 1
    paths = []
    for line in lines[start:]:
        if line.startswith("  psql "):  # a kept store's database, on Postgres
            continue
        if line.startswith("=") or ": " not in line:
            break
        paths.append(Path(line.rsplit(": ", 1)[1]))
    return paths


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


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--llama-keep-store"], {"test_ok0", "test_bad0"}),
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


def test_report_header(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_it(): pass")
    result = pytester.runpytest("--llama-guard=warn")
    result.stdout.fnmatch_lines(
        [
            "llamastate: stores in <basetemp>/llamastate, keep=failed, guard=warn, "
            "stack mode=library, flavor=* *"
        ]
    )


class TestGuard:
    WRITER = """
        from pathlib import Path
        def test_writes_home(llama_store):
            home = Path.home() / ".llama" / "distributions" / "starter"
            home.mkdir(parents=True)
            (home / "kvstore.db").write_text("leak")
        def test_clean(llama_store):
            (llama_store.path / "kvstore.db").write_text("fine")
        """

    def test_error_mode_fails_the_test_naming_the_paths(self, pytester: pytest.Pytester) -> None:
        pytester.makepyfile(self.WRITER)
        result = pytester.runpytest()
        result.assert_outcomes(passed=2, errors=1)
        result.stdout.fnmatch_lines(
            [
                "*ERROR at teardown of test_writes_home*",
                "*wrote to the real Llama Stack home*",
                f"*created: {pytester.path}/.llama/distributions/starter/kvstore.db",
            ]
        )

    def test_changes_to_existing_files_are_caught(self, pytester: pytest.Pytester) -> None:
        db = pytester.path / ".ogx" / "kvstore.db"
        db.parent.mkdir()
        db.write_text("before")
        pytester.makepyfile(
            """
            from pathlib import Path
            def test_it():
                (Path.home() / ".ogx" / "kvstore.db").write_text("after, longer")
            """
        )
        result = pytester.runpytest()
        result.assert_outcomes(passed=1, errors=1)
        result.stdout.fnmatch_lines([f"*changed: {db}"])

    def test_warn_mode_warns(self, pytester: pytest.Pytester) -> None:
        pytester.makepyfile(self.WRITER)
        result = pytester.runpytest("--llama-guard=warn")
        result.assert_outcomes(passed=2, warnings=1)
        result.stdout.fnmatch_lines(["*LlamaStoreLeakWarning*"])

    def test_off_mode_is_silent(self, pytester: pytest.Pytester) -> None:
        pytester.makepyfile(self.WRITER)
        pytester.runpytest("-o", "llama_guard=off").assert_outcomes(passed=2)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["-o", "llama_keep_store=sometimes"],
            "*llama_keep_store: unknown value 'sometimes'; allowed values: failed, all, none*",
        ),
        (
            ["--llama-guard=loud"],
            "*--llama-guard: unknown value 'loud'; allowed values: error, warn, off*",
        ),
        (["-o", "llama_guard=loud"], "*llama_guard: unknown value 'loud'*"),
        (
            ["-o", "llama_store_retention_count=-1"],
            "*llama_store_retention_count: '-1' is not a whole number >= 0*",
        ),
        (["--llama-store-dir", "afile"], "*--llama-store-dir: */afile exists and is not a folder*"),
        (["--llama-store-dir", "afile/sub"], "*--llama-store-dir: cannot write to */afile/sub*"),
        (
            ["-o", "llama_store_dir=afile"],
            "*ini llama_store_dir: */afile exists and is not a folder*",
        ),
    ],
)
def test_bad_input_is_a_usage_error(
    pytester: pytest.Pytester, args: list[str], message: str
) -> None:
    pytester.makefile(".txt", afile="not a folder")
    pytester.path.joinpath("afile.txt").rename(pytester.path / "afile")
    pytester.makepyfile("def test_it(llama_store): pass")
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "Traceback" not in result.stderr.str()
