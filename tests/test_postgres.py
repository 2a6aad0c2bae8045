"""The Postgres backend without pytest wiring: URLs, the server, the janitor, kv rows, stacks.

Runs against a real throwaway server (pgserver's binaries, or Postgres on the machine);
skipped when the driver or a Postgres is missing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pytest_llamastate.releases import LLAMA_STACK, OGX, Flavor
from pytest_llamastate.releases.install import install_command
from pytest_llamastate.state.store import state_env
from pytest_llamastate.storage.postgres.client import (
    DB_PREFIX,
    PostgresError,
    PostgresURL,
    check_server,
    database_name,
    database_url,
    env_for,
    read_kv_rows,
    with_connection,
    write_kv_rows,
)
from pytest_llamastate.storage.postgres.janitor import Janitor
from pytest_llamastate.storage.postgres.server import PostgresServer, acquire, find_binaries

if TYPE_CHECKING:
    from pytest_llamastate.state.registry import RegistryFormat

CONFIGS = Path(__file__).parent.parent / "pytest_llamastate" / "configs"

# -- no server needed ---------------------------------------------------------------------


def test_url_parsing_masks_the_password_and_quotes_what_needs_it() -> None:
    url = PostgresURL.parse("postgresql://alice:s%40cret@db.example:6543/app")
    assert (url.user, url.password, url.host, url.port, url.database) == (
        "alice", "s@cret", "db.example", 6543, "app",
    )  # fmt: skip
    assert url.masked == "postgresql://alice:***@db.example:6543/app"
    assert str(url) == "postgresql://alice:s%40cret@db.example:6543/app"
    assert PostgresURL.parse("postgres://bob@h").masked == "postgresql://bob@h:5432/postgres"


def test_env_for_points_at_the_named_database() -> None:
    env = env_for("postgresql://u:p@127.0.0.1:5999/postgres", "llamastate_x")
    assert env == {
        "POSTGRES_HOST": "127.0.0.1",
        "POSTGRES_PORT": "5999",
        "POSTGRES_DB": "llamastate_x",
        "POSTGRES_USER": "u",
        "POSTGRES_PASSWORD": "p",
    }
    assert database_url("postgresql://u:p@h:1/postgres", "d") == "postgresql://u:p@h:1/d"


@pytest.mark.parametrize("bad", ["mysql://u:p@h/db", "postgresql://u:hunter2@h:notaport/db"])
def test_a_bad_url_is_one_line_without_the_password(bad: str) -> None:
    with pytest.raises(PostgresError, match="not a Postgres URL") as info:
        PostgresURL.parse(bad)
    assert "hunter2" not in str(info.value)
    assert "\n" not in str(info.value)


def test_database_names_are_postgres_identifiers_and_stable() -> None:
    name = database_name("Run-ABC", "gw0", "3")
    assert name == "llamastate_run_abc_gw0_3"
    long = database_name("persistent", "x" * 100)
    assert len(long.encode()) <= 63
    assert long.startswith(DB_PREFIX)
    assert long == database_name("persistent", "x" * 100)  # no per-process hash seed
    assert long != database_name("persistent", "x" * 99 + "y")


def test_a_missing_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "asyncpg", None)  # import now raises ModuleNotFoundError
    with pytest.raises(PostgresError) as info:
        check_server("postgresql://u:secret@127.0.0.1:1/postgres")
    assert install_command("postgres") in str(info.value)
    assert "secret" not in str(info.value)


def test_a_throwaway_server_that_panicked_is_named_by_its_log_not_a_hint_to_start_it(
    tmp_path: Path,
) -> None:
    """A full disk stops Postgres (a checkpoint cannot write): the janitor's next call
    quotes the PANIC the log got since this process joined, not an older one, and names
    the data folder and the log (here: a real log's lines, a closed port)."""
    log = tmp_path / "server.log"
    old = '2026-12-05 10:00:00.000 UTC [7] PANIC:  could not open file "global/pg_control"\n'
    log.write_text(old)
    server = PostgresServer(
        "postgresql://postgres:pw@127.0.0.1:1/postgres", True, tmp_path, log, None, len(old)
    )
    janitor = Janitor(server.url, run_id="t", explain=server.explain)
    with pytest.raises(PostgresError) as before:
        janitor.exists("llamastate_x")
    assert "the server is unreachable" in str(before.value)  # the old PANIC is not ours
    with log.open("a") as out:
        out.write(
            "2026-12-06 20:49:41.516 UTC [18391] PANIC:  could not write to file "
            '"pg_logical/replorigin_checkpoint.tmp": No space left on device\n'
            "2026-12-06 20:49:41.592 UTC [18446] FATAL:  the database system is in recovery mode\n"
        )
    with pytest.raises(PostgresError) as info:
        janitor.exists("llamastate_x")
    assert str(info.value) == (
        "postgresql://postgres:***@127.0.0.1:1/postgres: the throwaway Postgres stopped: "
        'PANIC: could not write to file "pg_logical/replorigin_checkpoint.tmp": No space '
        f"left on device (data folder: {(tmp_path / 'pgdata').resolve()}; log: {log})"
    )
    given = PostgresServer("postgresql://postgres:pw@127.0.0.1:1/postgres", False)
    assert given.explain(OSError("refused")) is None  # a server you run: as it is


# -- against a real server -----------------------------------------------------------------

pytest.importorskip("asyncpg")
if find_binaries() is None:
    pytest.skip(f"no Postgres binaries ({install_command('postgres')})", allow_module_level=True)


@pytest.fixture
def data_root() -> Iterator[Path]:
    """A data folder outside pytest's basetemp: as root, Postgres runs as user pgserver,
    which must traverse every folder above it, and each pytest session start resets
    ``/tmp/pytest-of-root`` to 0700 (a concurrent run would lock our server out)."""
    folder = Path(tempfile.mkdtemp(prefix="llamastate-pg-test-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    folder = Path(tempfile.mkdtemp(prefix="llamastate-pg-test-"))
    handle = acquire(data_dir=folder / "data")
    yield handle
    handle.release()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def janitor(server: PostgresServer) -> Iterator[Janitor]:
    j = Janitor(server.url, run_id=f"t{os.getpid()}")
    yield j
    for info in j.databases():
        if info.run == j.run_id:
            j.drop(info.name)
    j.close()


def _sql(url: str, sql: str) -> object:
    async def work(conn: object) -> object:
        return await conn.fetchval(sql)  # type: ignore[attr-defined]

    return with_connection(PostgresURL.parse(url), work)


def test_the_throwaway_server_listens_on_tcp_and_is_shared(server: PostgresServer) -> None:
    url = PostgresURL.parse(server.url)
    assert url.host == "127.0.0.1"
    assert server.started
    again = acquire(data_dir=server.data_dir)
    try:
        assert again.url == server.url
    finally:
        again.release()
    assert _sql(server.url, "SHOW listen_addresses") == "127.0.0.1"


def test_given_server_errors_are_one_line_with_the_fix(server: PostgresServer) -> None:
    url = PostgresURL.parse(server.url)
    wrong = str(url).replace(url.password, "wrongpass")
    with pytest.raises(PostgresError, match="wrong password") as info:
        acquire(wrong)
    assert "wrongpass" not in str(info.value)
    assert "***" in str(info.value)
    with pytest.raises(PostgresError, match="unreachable"):
        acquire(f"postgresql://postgres:x@127.0.0.1:{_free_port()}/postgres")
    with pytest.raises(PostgresError, match="does not exist"):
        acquire(database_url(server.url, "no_such_db"))
    _sql(server.url, "DROP ROLE IF EXISTS llamastate_weak")
    _sql(server.url, "CREATE ROLE llamastate_weak LOGIN PASSWORD 'weakpw'")
    weak = f"postgresql://llamastate_weak:weakpw@127.0.0.1:{url.port}/postgres"
    with pytest.raises(PostgresError, match=r"may not create databases.*CREATEDB"):
        acquire(weak)
    _sql(server.url, "ALTER ROLE llamastate_weak CREATEDB")
    given = acquire(weak)
    assert not given.started
    assert PostgresURL.parse(given.url).user == "llamastate_weak"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_create_from_template_copies_rows_and_drop_cuts_connections(janitor: Janitor) -> None:
    template = janitor.new_name("tmpl")
    janitor.create(template, kind="template")
    rows = [("b", '{"n": 2}'), ("a", '{"n": 1}')]
    write_kv_rows(database_url(janitor.url, template), "llamastack_kvstore", rows)
    janitor.mark_template(template)
    name = janitor.new_name("gw0")
    url = janitor.create(name, template=template)
    assert janitor.exists(name)
    assert read_kv_rows(url, "llamastack_kvstore") == sorted(rows)
    write_kv_rows(url, "llamastack_kvstore", [("c", "{}")], delete=["a"])
    assert [k for k, _ in read_kv_rows(url, "llamastack_kvstore")] == ["b", "c"]
    assert [
        k for k, _ in read_kv_rows(database_url(janitor.url, template), "llamastack_kvstore")
    ] == ["a", "b"]

    holder = subprocess.Popen([sys.executable, "-c", _HOLD_CONNECTION, url], stdout=subprocess.PIPE)
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == b"connected"
    try:
        assert janitor.drop(name)  # with a connection open: it is terminated first
        assert not janitor.exists(name)
    finally:
        holder.kill()
        holder.wait()
    assert janitor.drop(template)  # a template too
    assert not janitor.drop(template)


_HOLD_CONNECTION = textwrap.dedent(
    """
    import asyncio, sys, asyncpg
    async def main():
        conn = await asyncpg.connect(sys.argv[1])
        print("connected", flush=True)
        await asyncio.sleep(30)
    asyncio.run(main())
    """
)


def test_drop_refuses_databases_that_are_not_ours(janitor: Janitor) -> None:
    with pytest.raises(PostgresError, match="not ours"):
        janitor.drop("postgres")
    assert janitor.exists("postgres")


def test_missing_kv_table_reads_as_empty(janitor: Janitor) -> None:
    url = janitor.create(janitor.new_name("empty"))
    assert read_kv_rows(url, "ogx_kvstore") == []


def test_prune_drops_databases_of_gone_processes_only(server: PostgresServer) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    gone = Janitor(server.url, run_id="goneRun", owner_pid=int(dead.stdout))
    mine = Janitor(server.url, run_id=f"live{os.getpid()}")
    try:
        stale = gone.new_name()
        gone.create(stale)
        kept = gone.create(database_name("persistent", "soak"), kind="persistent")
        live = mine.new_name()
        mine.create(live)
        infos = {i.name: i for i in mine.databases()}
        assert infos[stale].pid == int(dead.stdout)
        assert infos[stale].run == "goneRun"
        assert mine.prune() == [stale]
        assert mine.exists(live)
        assert mine.exists(PostgresURL.parse(kept).database)
        old = Janitor(server.url, run_id="old", owner_pid=os.getpid())
        old.create(old.new_name())
        # On its host, a live owner's database is judged by its owner, never by age...
        assert mine.prune(max_age=-1) == []
        # ...and a reused pid (same pid, another start time) is not its owner.
        old.owner_started = "another-boot:1"
        old.create(old.new_name())
        assert mine.prune() == ["llamastate_old_main_2"]
        old.drop("llamastate_old_main_1")
        old.close()
    finally:
        mine.drop(live)
        mine.drop(database_name("persistent", "soak"))
        gone.close()
        mine.close()


_HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from pytest_llamastate.storage.postgres.server import acquire
    server = acquire(data_dir=Path(sys.argv[1]))
    print(server.url, flush=True)
    time.sleep(120)
    """
)


def _postmaster(data: Path) -> int:
    return int(json.loads((data / "server.json").read_text())["postmaster"])


def _gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_a_sigkilled_last_user_leaves_no_server_and_data_survives(data_root: Path) -> None:
    data = data_root / "data"
    server = acquire(data_dir=data)
    Janitor(server.url, run_id="keep").create("llamastate_named_db", kind="persistent")
    second = subprocess.Popen([sys.executable, "-c", _HOLDER, str(data)], stdout=subprocess.PIPE)
    assert second.stdout is not None
    assert second.stdout.readline().decode().strip() == server.url  # joined, not a second server
    postmaster = _postmaster(data)
    server.release()
    time.sleep(1)
    assert not _gone(postmaster, 0), "stopped while a user was left"
    second.send_signal(signal.SIGKILL)
    second.wait()
    assert _gone(postmaster, 10), "the server outlived its last user"
    again = acquire(data_dir=data)
    try:
        assert Janitor(again.url, run_id="keep").exists("llamastate_named_db")
    finally:
        again.release()


def test_a_sigkilled_watchdog_takes_the_postmaster_with_it(data_root: Path) -> None:
    data = data_root / "data"
    server = acquire(data_dir=data)
    postmaster = _postmaster(data)
    os.kill(json.loads((data / "server.json").read_text())["watchdog"], signal.SIGKILL)
    try:
        assert _gone(postmaster, 10), "no parent-death signal reached the postmaster"
    finally:
        server.release()
    again = acquire(data_dir=data)  # a new server on the same folder
    again.release()


# -- a real stack on its own database ---------------------------------------------------------

_STACK = textwrap.dedent(
    """
    import asyncio, logging, os, sys, warnings
    from pytest_llamastate.releases import detect, import_quietly
    flavor = detect()
    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)
    module = import_quietly(flavor.library_module)
    module.setup_logging = lambda *a, **k: None
    os.environ.setdefault("PYTEST_CURRENT_TEST", "pytest-llamastate")
    client = getattr(module, flavor.library_client)(sys.argv[1])
    api = import_quietly(dict(flavor.api_types)["Api"])
    groups = client.async_client.impls[api.Api.tool_groups]
    flavor.run(client.loop, groups.register_tool_group(
        toolgroup_id="mcp::fresh", provider_id="model-context-protocol",
        mcp_endpoint=api.URL(uri="http://127.0.0.1:9/mcp")))
    listed = flavor.run(client.loop, groups.list_tool_groups()).data
    print(" ".join(sorted(t.identifier for t in listed)), flush=True)
    os._exit(0)
    """
)


def test_a_library_stack_writes_only_into_its_own_database(
    janitor: Janitor, tmp_path: Path
) -> None:
    flavor = next((f for f in (LLAMA_STACK, OGX) if importlib.util.find_spec(f.package)), None)
    if flavor is None:
        pytest.skip("neither llama-stack nor ogx is installed")
    registry = import_registry_format(flavor)
    table = "ogx_kvstore" if flavor is OGX else "llamastack_kvstore"
    config = CONFIGS / ("minimal-ogx-postgres.yaml" if flavor is OGX else "minimal-postgres.yaml")
    template = janitor.new_name("seeds")
    janitor.create(template, kind="template")
    seed = registry.toolgroup_row("mcp::seeded", "model-context-protocol", "http://127.0.0.1:9/mcp")
    write_kv_rows(database_url(janitor.url, template), table, [seed], flavor=flavor)
    janitor.mark_template(template)
    mine, other = janitor.new_name(), janitor.new_name()
    janitor.create(mine, template=template)
    janitor.create(other, template=template)
    env = {**os.environ, **env_for(janitor.url, mine), **state_env(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", _STACK, str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["mcp::fresh", "mcp::seeded"]
    keys = [k for k, _ in read_kv_rows(database_url(janitor.url, mine), table)]
    assert any(k.endswith("tool_group:mcp::fresh") for k in keys), keys
    other_keys = [k for k, _ in read_kv_rows(database_url(janitor.url, other), table)]
    assert other_keys == [seed[0]]


def import_registry_format(flavor: Flavor) -> RegistryFormat:
    """The registry format the stack writes on Postgres: on ``kv_postgres`` even
    llama-stack 0.7 prefixes keys with the namespace (its SQLite store does not)."""
    from dataclasses import replace

    from pytest_llamastate.state.registry import installed_format

    return replace(installed_format(flavor), namespace="registry")
