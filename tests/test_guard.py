"""The leak guard: what it catches, what it ignores, and that its per-test cost is the test's.

The unit tests drive ``HomeGuard`` directly against a fake home, once watching (inotify)
and once scanning, so the fallback is held to the same cases; the pytester tests at the
end go through the plugin.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from pytest_llamastate.state import guard as guard_module
from pytest_llamastate.state.guard import HomeGuard, real_state_homes

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A fake HOME whose ~/.llama already holds a few folders; no ~/.ogx."""
    home = tmp_path / "home"
    for sub in ("distributions/starter", "checkpoints/m1/shards"):
        (home / ".llama" / sub).mkdir(parents=True)
    (home / ".llama/distributions/starter/kvstore.db").write_text("state")
    (home / ".llama/checkpoints/m1/shards/0.bin").write_text("weights")
    (home / ".llama/checkpoints/m1/old.txt").write_text("old")
    return home


def make_guard(environ: dict[str, str], watch: bool) -> Iterator[HomeGuard]:
    guard = HomeGuard.for_roots(real_state_homes(environ), watch=watch)
    guard.start()
    assert guard.mode == ("inotify" if watch else "scan"), guard.fallback_reason
    try:
        yield guard
    finally:
        guard.close()


@pytest.fixture(
    params=[pytest.param(True, id="inotify", marks=linux_only), pytest.param(False, id="scan")]
)
def guard(request: pytest.FixtureRequest, home: Path) -> Iterator[HomeGuard]:
    yield from make_guard({"HOME": str(home)}, request.param)


@pytest.fixture
def watching(home: Path) -> Iterator[HomeGuard]:
    if not sys.platform.startswith("linux"):
        pytest.skip("inotify")
    yield from make_guard({"HOME": str(home)}, True)


def during(guard: HomeGuard, action: Callable[[], object]) -> list[str]:
    """What the guard reports for one test that does ``action``."""
    mark = guard.begin()
    action()
    return guard.end(mark)


def test_a_new_file_deep_in_the_tree(guard: HomeGuard, home: Path) -> None:
    deep = home / ".llama/checkpoints/m1/shards/1.bin"
    assert during(guard, lambda: deep.write_text("more weights")) == [f"created: {deep}"]


def test_an_append_to_an_existing_file(guard: HomeGuard, home: Path) -> None:
    db = home / ".llama/distributions/starter/kvstore.db"

    def append() -> None:
        with db.open("a") as f:
            f.write("+1")

    assert during(guard, append) == [f"changed: {db}"]


def test_a_rewrite_that_keeps_size_and_mtime(watching: HomeGuard, home: Path) -> None:
    """A walk compares (mtime, size) and cannot see this; the kernel's events can."""
    db = home / ".llama/distributions/starter/kvstore.db"
    st = db.stat()

    def rewrite() -> None:
        db.write_text("STATE")
        os.utime(db, ns=(st.st_atime_ns, st.st_mtime_ns))

    assert during(watching, rewrite) == [f"changed: {db}"]


def test_a_removal_and_a_rename(guard: HomeGuard, home: Path) -> None:
    old = home / ".llama/checkpoints/m1/old.txt"
    assert during(guard, old.unlink) == [f"removed: {old}"]
    db = home / ".llama/distributions/starter/kvstore.db"
    moved = db.with_name("kvstore.bak")
    assert during(guard, lambda: db.rename(moved)) == [f"created: {moved}", f"removed: {db}"]


def test_a_file_replaced_by_rename_is_changed(guard: HomeGuard, home: Path) -> None:
    db = home / ".llama/distributions/starter/kvstore.db"

    def atomic_write() -> None:
        tmp = db.with_name("kvstore.tmp")
        tmp.write_text("new state, longer")
        os.replace(tmp, db)

    assert during(guard, atomic_write) == [f"changed: {db}"]


def test_a_new_folder_with_files_made_before_any_watch(guard: HomeGuard, home: Path) -> None:
    """The folder's watch comes at the next read: its listing must name what is inside."""
    new = home / ".llama/distributions/ollama/providers"

    def make() -> None:
        new.mkdir(parents=True)
        (new / "run.yaml").write_text("x")

    assert during(guard, make) == [
        f"created: {new.parent}",
        f"created: {new}",
        f"created: {new / 'run.yaml'}",
    ]
    # ...and is watched from then on.
    assert during(guard, lambda: (new / "run.yaml").write_text("xy")) == [
        f"changed: {new / 'run.yaml'}"
    ]


def test_a_home_created_when_none_existed(guard: HomeGuard, home: Path) -> None:
    ogx = home / ".ogx"

    def make() -> None:
        (ogx / "distributions").mkdir(parents=True)
        (ogx / "distributions/kvstore.db").write_text("x")

    assert during(guard, make) == [
        f"created: {ogx}",
        f"created: {ogx / 'distributions'}",
        f"created: {ogx / 'distributions/kvstore.db'}",
    ]


def test_a_home_removed_then_created_again(guard: HomeGuard, home: Path) -> None:
    llama = home / ".llama"
    removed = during(guard, lambda: shutil.rmtree(llama))
    assert f"removed: {llama}" in removed
    assert f"removed: {llama / 'checkpoints/m1/shards/0.bin'}" in removed
    assert len(removed) == 9
    assert during(guard, lambda: (llama / "x").mkdir(parents=True)) == [
        f"created: {llama}",
        f"created: {llama / 'x'}",
    ]


def test_a_folder_moved_within_the_home_is_watched_at_its_new_path(
    guard: HomeGuard, home: Path
) -> None:
    old, new = home / ".llama/checkpoints/m1", home / ".llama/checkpoints/m2"
    moved = during(guard, lambda: old.rename(new))
    assert f"removed: {old / 'shards/0.bin'}" in moved
    assert f"created: {new / 'shards/0.bin'}" in moved
    after = new / "shards/1.bin"
    assert during(guard, lambda: after.write_text("x")) == [f"created: {after}"]


def test_a_config_dir_whose_parents_do_not_exist_yet(home: Path, tmp_path: Path) -> None:
    config = tmp_path / "not/yet/config"
    environ = {"HOME": str(home), "LLAMA_STACK_CONFIG_DIR": str(config)}
    for guard in make_guard(environ, sys.platform.startswith("linux")):
        made = during(guard, lambda: (config / "sub").mkdir(parents=True))
        assert made == [f"created: {config}", f"created: {config / 'sub'}"]


def test_writes_outside_the_homes_and_undone_writes_are_ignored(
    guard: HomeGuard, home: Path, tmp_path: Path
) -> None:
    def elsewhere() -> None:
        (home / ".llamas").mkdir()
        (home / ".llamas/x").write_text("x")
        (home / "notes.txt").write_text("x")
        (tmp_path / "store").mkdir()
        scratch = home / ".llama/scratch"
        scratch.write_text("gone before the test ends")
        scratch.unlink()

    assert during(guard, elsewhere) == []


def test_a_test_pointing_home_elsewhere(
    guard: HomeGuard, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The homes were resolved when the guard was made: a test's HOME is not the real one."""
    monkeypatch.setenv("HOME", str(tmp_path / "fake"))
    fake = Path.home() / ".llama/x"
    real = home / ".llama/y"

    def write() -> None:
        fake.parent.mkdir(parents=True)
        fake.write_text("x")
        real.write_text("y")

    assert during(guard, write) == [f"created: {real}"]


def test_changes_between_tests_are_nobody_s(guard: HomeGuard, home: Path) -> None:
    during(guard, lambda: None)
    (home / ".llama/between").write_text("a session fixture did it")
    assert during(guard, lambda: None) == []


@contextmanager
def counting_file_system_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    calls: list[str] = []
    with monkeypatch.context() as patch:
        for name in ("scandir", "walk", "lstat", "stat", "listdir"):
            real = getattr(os, name)

            def counted(*args: Any, _real: Any = real, _name: str = name, **kw: Any) -> Any:
                calls.append(_name)
                return _real(*args, **kw)

            patch.setattr(os, name, counted)
        yield calls


def test_watching_does_not_walk_the_home_per_test(
    watching: HomeGuard, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Per-test cost is the test's own writes: no listing, no stat of the home's files."""
    new = home / ".llama/checkpoints/m1/new"
    with counting_file_system_calls(monkeypatch) as calls:
        mark = watching.begin()
    new.write_text("x")
    with counting_file_system_calls(monkeypatch) as more_calls:
        changes = watching.end(mark)
    assert changes == [f"created: {new}"]
    assert calls + more_calls == []
    # The scanning fallback, for contrast, lists every folder around every test.
    for scanning in make_guard({"HOME": str(home)}, watch=False):
        with counting_file_system_calls(monkeypatch) as calls:
            scanning.end(scanning.begin())
        assert calls.count("scandir") + calls.count("walk") >= 2


def lose_events(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel's answer to a full queue: drop what follows, say IN_Q_OVERFLOW."""
    real_read = guard_module._Inotify.read

    def lossy(self: guard_module._Inotify) -> Iterator[tuple[int, int, str]]:
        monkeypatch.setattr(guard_module._Inotify, "read", real_read)
        for _ in real_read(self):
            pass
        yield (-1, guard_module._IN_Q_OVERFLOW, "")

    monkeypatch.setattr(guard_module._Inotify, "read", lossy)


def test_an_overflow_is_judged_by_a_walk_then_watched_again(
    watching: HomeGuard, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    time.sleep(0.05)  # files made by the fixture are older than the test's slack
    db = home / ".llama/distributions/starter/kvstore.db"
    new, old = home / ".llama/checkpoints/new", home / ".llama/checkpoints/m1/old.txt"

    def write() -> None:
        with db.open("a") as f:
            f.write("+1")
        new.write_text("x")
        old.unlink()
        lose_events(monkeypatch)

    assert during(watching, write) == [f"removed: {old}", f"created: {new}", f"changed: {db}"]
    assert watching.mode == "inotify"
    assert during(watching, lambda: db.write_text("y")) == [f"changed: {db}"]


def test_a_real_overflow(watching: HomeGuard, home: Path) -> None:
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    if limit > 40_000:
        pytest.skip(f"max_queued_events={limit}: too many files to make")
    many = home / ".llama/many"
    many.mkdir()
    during(watching, lambda: None)
    time.sleep(0.05)  # files made by the fixture are older than the test's slack

    def flood() -> None:
        for n in range(limit // 2 + 100):  # a create and a modify each
            (many / str(n)).write_text("x")

    changes = during(watching, flood)
    assert len(changes) == limit // 2 + 100
    assert changes[0].startswith(f"created: {many}/")
    assert watching.mode == "inotify"


def hit_the_watch_limit(guard: HomeGuard, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(fd: int, path: bytes, mask: int) -> int:
        ctypes.set_errno(errno.ENOSPC)
        return -1

    real_init = guard_module._Inotify.__init__

    def limited(self: guard_module._Inotify) -> None:
        real_init(self)
        self._add = no_space

    monkeypatch.setattr(guard_module._Inotify, "__init__", limited)
    assert guard._watch is not None
    assert guard._watch.inotify is not None
    guard._watch.inotify._add = no_space


def test_the_watch_limit_falls_back_to_scanning(
    watching: HomeGuard, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    time.sleep(0.05)
    db = home / ".llama/distributions/starter/kvstore.db"
    new = home / ".llama/newdir"

    def write() -> None:
        hit_the_watch_limit(watching, monkeypatch)
        new.mkdir()
        (new / "f").write_text("x")
        with db.open("a") as f:
            f.write("+1")

    assert during(watching, write) == [f"changed: {db}", f"created: {new}", f"created: {new / 'f'}"]
    assert watching.mode == "scan"
    assert "max_user_watches" in (watching.fallback_reason or "")
    assert during(watching, lambda: (new / "g").write_text("x")) == [f"created: {new / 'g'}"]


def test_the_watch_limit_at_start(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(*args: object) -> int:
        raise guard_module._Lost("inotify_add_watch: No space left on device")

    monkeypatch.setattr(guard_module._Inotify, "add", no_space)
    guard = HomeGuard.for_roots(real_state_homes({"HOME": str(home)}))
    guard.start()
    assert guard.mode == "scan"
    new = home / ".llama/x"
    assert during(guard, lambda: new.write_text("x")) == [f"created: {new}"]


def test_describe_lists_twenty_paths_and_counts_the_rest() -> None:
    message = HomeGuard.describe([f"created: /h/.llama/{n:02}" for n in range(25)])
    lines = message.splitlines()
    assert lines[0] == "this test wrote to the real Llama Stack home, outside its isolated store:"
    assert lines[1:3] == ["  created: /h/.llama/00", "  created: /h/.llama/01"]
    assert lines[21] == "  ... and 5 more"
    assert "--llama-guard=warn|off" in lines[22]


# Through the plugin: pytester's HOME is pytester.path.

WRITERS = """
    from pathlib import Path
    LLAMA = Path.home() / ".llama"
    def test_deep(llama_store):
        (LLAMA / "checkpoints/m1/shards/1.bin").write_text("x")
    def test_append():
        with (LLAMA / "distributions/starter/kvstore.db").open("a") as f:
            f.write("+1")
    def test_remove():
        (LLAMA / "checkpoints/m1/old.txt").unlink()
    def test_clean(llama_store):
        (llama_store.path / "kvstore.db").write_text("fine")
    def test_home_elsewhere(monkeypatch, tmp_path):
        monkeypatch.setenv("HOME", str(tmp_path))
        (Path.home() / ".llama").mkdir()
        (Path.home() / ".llama/kvstore.db").write_text("its own")
    """


def populate(pytester: pytest.Pytester) -> Path:
    llama = pytester.path / ".llama"
    for sub in ("distributions/starter", "checkpoints/m1/shards"):
        (llama / sub).mkdir(parents=True)
    (llama / "distributions/starter/kvstore.db").write_text("state")
    (llama / "checkpoints/m1/old.txt").write_text("old")
    return llama


def test_plugin_names_each_leak(pytester: pytest.Pytester) -> None:
    llama = populate(pytester)
    pytester.makepyfile(WRITERS)
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=5, errors=3)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_deep*",
            f"*created: {llama}/checkpoints/m1/shards/1.bin",
            "*ERROR at teardown of test_append*",
            f"*changed: {llama}/distributions/starter/kvstore.db",
            "*ERROR at teardown of test_remove*",
            f"*removed: {llama}/checkpoints/m1/old.txt",
        ]
    )


def test_plugin_does_not_walk_the_homes_per_test(pytester: pytest.Pytester) -> None:
    """Passes once the plugin drives the guard through begin()/end() (inotify on Linux)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("inotify")
    llama = populate(pytester)
    pytester.makeconftest(
        """
        from pytest_llamastate.state import guard
        REAL = guard._scan
        def walk(*args):
            raise AssertionError("the guard walked the home")
        def pytest_configure(config):
            guard._scan = walk
        def pytest_unconfigure(config):
            guard._scan = REAL
        """
    )
    pytester.makepyfile(WRITERS)
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=5, errors=3)
    result.stdout.no_fnmatch_line("*the guard walked the home*")
    result.stdout.fnmatch_lines([f"*created: {llama}/checkpoints/m1/shards/1.bin"])


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
