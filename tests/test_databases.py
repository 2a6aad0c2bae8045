"""Stores on Postgres end to end: a database per store, seeds from a template database,
keep and drop, config checks, bad servers, the command line, pruning.

Most tests use the suite's shared throwaway server by URL (``postgres_url``); one starts
the plugin's own, as a user without ``--llama-postgres-url`` gets it.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flavors import FLAVOR, skip_module_without_a_stack

from pytest_llamastate import LlamaStore
from pytest_llamastate.storage.postgres.client import PostgresURL, with_connection
from pytest_llamastate.storage.postgres.janitor import Janitor

skip_module_without_a_stack()
pytest.importorskip("asyncpg")

SEED = {"toolgroup_id": "mcp::seeded", "mcp_endpoint": "http://127.0.0.1:9/mcp"}


def databases(url: str, run: str | None = None) -> set[str]:
    """Names of the plugin's databases on the server (of one run: ``run``)."""
    janitor = Janitor(url, run_id="tests")
    try:
        return {i.name for i in janitor.databases() if run is None or i.run == run}
    finally:
        janitor.close()


@pytest.fixture
def on_postgres(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setenv("PGPASSWORD", PostgresURL.parse(postgres_url).password)
    return ["--llama-backend=postgres", f"--llama-postgres-url={postgres_url}"]


@pytest.mark.parametrize("mode", ["library", "server"])
@pytest.mark.exec_too
def test_each_test_gets_its_own_database_holding_its_seeds(
    pytester: pytest.Pytester, on_postgres: list[str], postgres_url: str, mode: str
) -> None:
    pytester.makepyfile(
        f"""
        import json, os, pytest

        @pytest.mark.llama_toolgroups({SEED!r})
        def test_a(llama_stack, llama_store):
            assert llama_store.database_url.endswith("/" + os.environ["POSTGRES_DB"])
            llama_stack.register_toolgroup("mcp::one", mcp_endpoint="http://127.0.0.1:9/sse")
            assert {{t.identifier for t in llama_stack.toolgroups()}} == {{"mcp::seeded", "mcp::one"}}
            assert {{t.identifier for t in llama_store.toolgroups()}} == {{"mcp::seeded", "mcp::one"}}
            assert not (llama_store.path / "kvstore.db").exists()  # the rows are in Postgres
            open("names", "a").write(os.environ["POSTGRES_DB"] + "\\n")

        def test_b(llama_stack):
            assert llama_stack.toolgroups() == []
            llama_stack.restart()
            assert llama_stack.toolgroups() == []
            open("names", "a").write(os.environ["POSTGRES_DB"] + "\\n")
        """
    )
    pytester.runpytest(*on_postgres, f"--llama-stack-mode={mode}").assert_outcomes(passed=2)
    names = (pytester.path / "names").read_text().split()
    assert len(set(names)) == 2
    run = names[0].split("_")[1]  # llamastate_<run>_<worker>_<n>
    assert all(name.startswith(f"llamastate_{run}_main_") for name in names)
    # both dropped after their tests, and so is this run's seed template
    assert databases(postgres_url, run) == set()


def test_postgres_variables_are_restored_exactly(
    pytester: pytest.Pytester, on_postgres: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSTGRES_HOST", "db.example")
    monkeypatch.delenv("POSTGRES_DB", raising=False)
    pytester.makepyfile(
        """
        import os
        def test_in(llama_store):
            assert os.environ["POSTGRES_HOST"] == "127.0.0.1"
        def test_after():
            assert os.environ["POSTGRES_HOST"] == "db.example"
            assert "POSTGRES_DB" not in os.environ
        """
    )
    pytester.runpytest(*on_postgres, "-p", "no:randomly").assert_outcomes(passed=2)


def test_a_kept_database_outlives_the_run_and_the_summary_says_how_to_open_it(
    pytester: pytest.Pytester, on_postgres: list[str], postgres_url: str
) -> None:
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.llama_toolgroups({SEED!r})
        def test_bad(llama_store):
            assert False
        """
    )
    result = pytester.runpytest(*on_postgres)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            'database: psql "postgresql://*/llamastate_*"',
            "*llama stores kept*",
            "*: *test_bad0",
            '  psql "postgresql://*',
        ]
    )
    [path] = [line.split(": ", 1)[1] for line in result.outlines if "::test_bad: " in line]
    store = LlamaStore.open(Path(path))
    assert store.database_url is not None
    assert store.tables.name in databases(postgres_url)
    assert [t.identifier for t in store.toolgroups()] == ["mcp::seeded"]
    # and the command line reads it like any store
    show = subprocess.run(
        [sys.executable, "-m", "pytest_llamastate", "show", "--json", path],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert show.returncode == 0, show.stderr
    doc = json.loads(show.stdout)
    assert [t["identifier"] for t in doc["toolgroups"]] == ["mcp::seeded"]
    assert doc["marker"]["database"]["database"] == store.tables.name
    assert "***" in doc["marker"]["database"]["url"]  # never the password


def test_databases_are_unique_across_xdist_workers(
    pytester: pytest.Pytester, on_postgres: list[str]
) -> None:
    pytester.makepyfile(
        """
        import os, pytest

        @pytest.mark.parametrize("n", range(6))
        def test_it(llama_store, n):
            open(f"name-{n}", "w").write(os.environ["POSTGRES_DB"])
        """
    )
    pytester.runpytest_subprocess(*on_postgres, "-n", "2").assert_outcomes(passed=6)
    names = {p.read_text() for p in pytester.path.glob("name-*")}
    assert len(names) == 6


def test_a_persistent_database_survives_runs_and_reset_drops_it(
    pytester: pytest.Pytester, on_postgres: list[str], postgres_url: str
) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.persistent("soak")
        def test_grow(llama_stack):
            n = len(llama_stack.toolgroups())
            llama_stack.register_toolgroup(f"mcp::t{n}", mcp_endpoint="http://127.0.0.1:9/x")
        """
    )
    for _ in range(2):
        pytester.runpytest(*on_postgres).assert_outcomes(passed=1)
    persist = pytester.path / ".pytest_cache/d/llamastate"
    store = LlamaStore.open(persist / "soak")
    assert {t.identifier for t in store.toolgroups()} == {"mcp::t0", "mcp::t1"}
    assert store.database_url is not None
    reset = subprocess.run(
        [sys.executable, "-m", "pytest_llamastate", "reset", "soak", "--yes", "--persist-dir", str(persist)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert reset.returncode == 0, reset.stderr
    assert f"dropped database {store.tables.name}" in reset.stdout
    assert store.tables.name not in databases(postgres_url)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda t: t.replace("db: ${env.POSTGRES_DB}", "db: shared", 1),
            "*storage.backends.kv_default.db = 'shared' is not the test's own database*",
        ),
        (
            lambda t: t.replace("type: kv_postgres", "type: kv_redis", 1),
            "*storage.backends.kv_default is kv_redis, which pytest-llamastate does not isolate*",
        ),
    ],
    ids=["another-database", "redis"],
)
def test_a_config_that_shares_state_is_refused_naming_the_key(
    pytester: pytest.Pytester, on_postgres: list[str], edit: object, message: str
) -> None:
    config = pytester.path / "shared.yaml"
    config.write_text(edit(FLAVOR.default_postgres_config.read_text()))  # type: ignore[operator]
    pytester.makepyfile("def test_it(llama_stack): pass")
    result = pytester.runpytest(*on_postgres, f"--llama-stack-config={config}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_a_postgres_config_on_the_sqlite_backend_is_refused(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_it(llama_stack): pass")
    result = pytester.runpytest(f"--llama-stack-config={FLAVOR.default_postgres_config}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*is kv_postgres, but the test's store is on SQLite*--llama-backend=postgres*"]
    )


def test_bad_servers_are_a_usage_error_naming_the_url_without_its_password(
    pytester: pytest.Pytester, postgres_url: str
) -> None:
    url = PostgresURL.parse(postgres_url)

    async def make_role(conn: object) -> None:
        await conn.execute("DROP ROLE IF EXISTS nocreate")  # type: ignore[attr-defined]
        await conn.execute("CREATE ROLE nocreate LOGIN PASSWORD 'pw'")  # type: ignore[attr-defined]

    with_connection(url, make_role)
    cases = {
        "postgresql://u:topsecret@127.0.0.1:1/postgres": "*postgresql://u:***@127.0.0.1:1/postgres: the server is unreachable*",
        str(url).replace(
            url.password, "wrong"
        ): "*postgresql://postgres:***@*: wrong password for role 'postgres'*",
        f"postgresql://nocreate:pw@127.0.0.1:{url.port}/postgres": "*role 'nocreate' may not create databases; ALTER ROLE*",
        "mysql://x": "*not a Postgres URL*",
    }
    pytester.makepyfile("def test_it(llama_store): pass")
    for bad, message in cases.items():
        result = pytester.runpytest("--llama-backend=postgres", f"--llama-postgres-url={bad}")
        assert result.ret == pytest.ExitCode.USAGE_ERROR, bad
        result.stderr.fnmatch_lines([f"ERROR: --llama-backend=postgres: {message}"])
        assert "topsecret" not in result.stderr.str()
        assert "Traceback" not in result.stderr.str()
    result = pytester.runpytest(f"--llama-postgres-url={postgres_url}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--llama-postgres-url is set, but the backend is sqlite*"])


def test_databases_of_a_killed_run_are_pruned_by_the_next(
    pytester: pytest.Pytester, on_postgres: list[str], postgres_url: str
) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    janitor = Janitor(postgres_url, run_id="killedrun", owner_pid=int(dead.stdout))
    # The killed run's basetemp keeps its folders (pytest prunes a locked one after days).
    left_behind, kept_folder = pytester.path / "left" / "test_x0", pytester.path / "kept"
    left_behind.mkdir(parents=True)
    kept_folder.mkdir()
    try:
        left = janitor.new_name("gw0")
        janitor.create(left, store=str(left_behind))
        orphan = janitor.new_name("gw1")
        janitor.create(orphan, kind="template")  # no store: its owner's death says it
        kept = janitor.new_name("gw2")
        janitor.create(kept, store=str(kept_folder))
        janitor.keep(kept)  # kept on purpose: lives as long as its folder
    finally:
        janitor.close()
    # (another worker's run may prune them first: any next run does)
    pytester.makepyfile("def test_it(llama_store): pass")
    pytester.runpytest(*on_postgres).assert_outcomes(passed=1)
    assert not {left, orphan} & databases(postgres_url)
    assert kept in databases(postgres_url)
    kept_folder.rmdir()
    pytester.runpytest(*on_postgres).assert_outcomes(passed=1)
    assert kept not in databases(postgres_url)


def test_without_a_url_the_plugin_starts_a_server_and_stops_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import os
        def test_it(llama_stack, llama_store):
            llama_stack.register_toolgroup("mcp::one", mcp_endpoint="http://127.0.0.1:9/sse")
            assert os.environ["POSTGRES_HOST"] == "127.0.0.1"
            assert [t.identifier for t in llama_store.toolgroups()] == ["mcp::one"]
            assert False  # kept, to be read after the run
        """
    )
    result = pytester.runpytest("--llama-backend=postgres")
    result.assert_outcomes(failed=1)
    data = pytester.path / ".pytest_cache/d/llamastate/.postgres"
    result.stdout.fnmatch_lines(
        [
            f"llamastate: backend=postgres, a database per store on postgresql://postgres:***@127.0.0.1:*/postgres (a throwaway server in {data})"
        ]
    )
    assert (data / "pgdata").is_dir()  # beside the persistent stores
    pid_file = data / "pgdata" / "postmaster.pid"

    def stopped() -> None:  # the last user gone, its watchdog stops the server
        deadline = time.monotonic() + 10
        while pid_file.exists():
            assert time.monotonic() < deadline, "the throwaway server is still running"
            time.sleep(0.1)

    stopped()
    # after the run, the command starts the server again to read the kept store
    [path] = [line.split(": ", 1)[1] for line in result.outlines if "::test_it: " in line]
    show = subprocess.run(
        [sys.executable, "-m", "pytest_llamastate", "show", "--json", path],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert show.returncode == 0, show.stderr
    assert [t["identifier"] for t in json.loads(show.stdout)["toolgroups"]] == ["mcp::one"]
    stopped()
    text = subprocess.run(
        [sys.executable, "-m", "pytest_llamastate", "show", path],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    [line] = [x for x in text.splitlines() if x.startswith("database:")]
    assert re.fullmatch(
        r"database: +postgresql://postgres:\*\*\*@127\.0\.0\.1:\d+/llamastate_\w+", line
    )


# -- the two checks that read only SQLite files before the storage split (issue 19) ---------


def test_a_persistent_stores_integrity_check_reads_its_database(
    pytester: pytest.Pytester, on_postgres: list[str]
) -> None:
    """A persistent store whose database went away under it fails its release check (it
    read the SQLite files a Postgres store does not have, so it passed)."""
    pytester.makepyfile(
        """
        import pytest
        from pytest_llamastate.storage.postgres.janitor import Janitor

        @pytest.mark.persistent("vanishing")
        def test_drops_its_database(llama_store):
            db = llama_store.tables
            janitor = Janitor(db.url.with_database("postgres"), run_id="tests")
            assert janitor.drop(db.name)
            janitor.close()
        """
    )
    result = pytester.runpytest(*on_postgres)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        ["*persistent store 'vanishing' failed its integrity check*", "*does not exist*"]
    )


def test_the_shared_store_leak_report_sees_tables_on_postgres(
    pytester: pytest.Pytester, on_postgres: list[str]
) -> None:
    """A conversation left in a shared store's database is named, not only registry rows."""
    from test_state_templates import SHARED

    pytester.makepyfile(SHARED)
    result = pytester.runpytest("--llama-leaks=error", "-p", "no:randomly", *on_postgres)
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*test_leaves_a_toolgroup_and_a_conversation changed the shared store shared*",
            "*+ tool_group:mcp::left",
            "*+ 1 row(s) in openai_conversations (conv_*)",
        ]
    )


def _private_folder(project: Path, which: str) -> Path:
    """The folder that turns 0700 mid-run: the project, or pytest's basetemp root
    (``pytest-of-<user>``), which pytest makes private again at every session start."""
    if which == "project":
        return project
    roots = [p for p in project.parents if p.name.startswith("pytest-of-")]
    if not roots:
        pytest.skip("the project is not under pytest's own basetemp root (--basetemp given)")
    return roots[0]


@pytest.fixture
def parents_held(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One test at a time changes and checks the modes of the folders above a project
    (xdist workers share pytest's basetemp root)."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp().parent
    with FileLock(str(root.with_name(root.name + ".parents.lock"))):
        yield


@pytest.mark.usefixtures("parents_held")
@pytest.mark.parametrize("private", ["project", "basetemp-root"])
def test_the_throwaway_server_goes_on_when_the_users_folders_turn_private(
    pytester: pytest.Pytester, private: str
) -> None:
    """The project lives in pytest's basetemp (as in any pytester-based suite), and a
    folder above the server's files turns 0700 in the middle of the run, as pytest does
    to its basetemp root at every session start: the server goes on, the next test gets
    its database, the session ends cleanly, and the next run in that project finds its
    persistent store. No folder above changes mode. As root, Postgres runs as user
    pgserver on a data folder of its own; as another user, as that user in the project."""
    folder = _private_folder(pytester.path, private)
    original = folder.stat().st_mode
    folder.chmod(0o711)  # passable by anyone, until it turns private below
    parents = [pytester.path, *pytester.path.parents]
    before = {p: p.stat().st_mode for p in parents}
    pytester.makepyfile(
        f"""
        import os, pytest

        @pytest.mark.persistent("kept")
        def test_a(llama_stack, llama_store):
            if not llama_stack.toolgroups():
                llama_stack.register_toolgroup("mcp::one", mcp_endpoint="http://127.0.0.1:9/sse")

        def test_private():
            os.chmod({str(folder)!r}, 0o700)

        def test_b(llama_stack, llama_store):
            assert llama_store.database_url is not None
            llama_stack.register_toolgroup("mcp::two", mcp_endpoint="http://127.0.0.1:9/sse")
            assert [t.identifier for t in llama_store.toolgroups()] == ["mcp::two"]

        @pytest.mark.persistent("kept")
        def test_c(llama_store):
            assert [t.identifier for t in llama_store.toolgroups()] == ["mcp::one"]
        """
    )
    data = pytester.path / ".pytest_cache/d/llamastate/.postgres"
    try:
        first = pytester.runpytest("--llama-backend=postgres", "-p", "no:randomly")
        assert (folder.stat().st_mode & 0o777) == 0o700
        # the server stopped with the run; the next one starts it again, folder private
        again = pytester.runpytest("--llama-backend=postgres", "-p", "no:randomly")
    finally:
        folder.chmod(before[folder])
    try:
        assert {p: p.stat().st_mode for p in parents} == before
    finally:
        folder.chmod(original)
    for result in (first, again):
        result.assert_outcomes(passed=4)
        assert result.ret == pytest.ExitCode.OK
        text = result.stdout.str() + result.stderr.str()
        assert "Traceback" not in text, text
        assert "not dropped" not in text, text
    deadline = time.monotonic() + 10  # the last user gone, its watchdog stops the server
    while (data / "pgdata" / "postmaster.pid").exists():
        assert time.monotonic() < deadline, "the throwaway server is still running"
        time.sleep(0.1)
    assert "PANIC" not in (data / "server.log").read_text(errors="replace")
    link = data / "pgdata"
    assert link.is_symlink() == (os.geteuid() == 0)
    st = link.resolve().stat()
    server_user = "pgserver" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    assert (pwd.getpwuid(st.st_uid).pw_name, oct(st.st_mode & 0o777)) == (server_user, "0o700")


@contextlib.contextmanager
def _admin_url(given: str | None, data: Path) -> Iterator[str]:
    """The given server's URL, or the plugin's own server of data folder ``data``, joined
    (started if it is down) for as long as the block runs."""
    if given:
        yield given
        return
    from pytest_llamastate.storage.postgres.server import acquire

    server = acquire(data_dir=data)
    try:
        yield server.url
    finally:
        server.release()


@pytest.mark.flavor_neutral
@pytest.mark.parametrize(
    ("mode", "server"), [("library", "given"), ("server", "given"), ("library", "own")]
)
def test_a_sigkilled_runs_databases_are_gone_after_the_next_run(
    pytester: pytest.Pytester, postgres_url: str, mode: str, server: str
) -> None:
    """A real pytest process SIGKILLed in the middle of a test: the next run drops its
    database, whatever its basetemp still holds. On the plugin's own server (``own``) the
    server stops with the killed run and the next run starts it again on the same data."""
    ready = pytester.path / "ready"
    pytester.makepyfile(
        test_killed=f"""
        import pathlib, time
        def test_hang(llama_stack, llama_store):
            pathlib.Path({str(ready)!r}).write_text(llama_store.tables.name)
            time.sleep(300)
        """,
        test_next="def test_it(llama_store): pass",
    )
    given = postgres_url if server == "given" else None
    args = ["--llama-backend=postgres", *([f"--llama-postgres-url={given}"] if given else [])]
    env = {**os.environ, "PGPASSWORD": PostgresURL.parse(postgres_url).password}
    data = pytester.path / ".pytest_cache/d/llamastate/.postgres"
    killed = subprocess.Popen(
        [sys.executable, "-m", "pytest", f"--llama-stack-mode={mode}", *args, "test_killed.py"],
        cwd=pytester.path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert killed.poll() is None, "the run ended before its test started"
            assert time.monotonic() < deadline, "the run never got to its test"
            time.sleep(0.1)
        name = ready.read_text()
        with _admin_url(given, data) as url:
            assert name in databases(url)
    finally:
        killed.kill()
        killed.wait(30)
    if given:
        janitor = Janitor(given, run_id="tests")
        try:  # its stack's connections close with it (a server-mode stack's within moments)
            deadline = time.monotonic() + 10
            while any(i.connections for i in janitor.databases() if i.name == name):
                assert time.monotonic() < deadline, "the killed run's database stays in use"
                time.sleep(0.1)
        finally:
            janitor.close()
    else:  # its last user gone, the watchdog stops the server (the data stays)
        deadline = time.monotonic() + 30
        while (data / "pgdata" / "postmaster.pid").exists():
            assert time.monotonic() < deadline, "the killed run's server is still running"
            time.sleep(0.1)
    pytester.runpytest(*args, "test_next.py").assert_outcomes(passed=1)
    with _admin_url(given, data) as url:
        assert name not in databases(url)
