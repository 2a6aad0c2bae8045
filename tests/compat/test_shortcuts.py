"""Library stacks built with the release's shortcuts are as isolated as ones built without.

The route table and the SQLite schema are shared from the second stack of a config on, so
the isolation test runs five stacks: the later ones call through rebound endpoints into
files tables created from the first one's schema. The plugin's own calls
(``toolgroups()``) skip the routes; ``client.files`` goes through them (on llama-stack
0.2.12, whose library client cannot upload, ``client.toolgroups``). Every test here
runs with whichever flavor and release is installed: part of the compatibility suite, it
runs on every tested release (``make test-compat``; llama-stack 0.7 and OGX 1.5 with the
rest of the suite). The inner runs are subprocesses, as the compatibility suite's: an
older release's library stack keeps state in process globals.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from flavors import FLAVOR, skip_module_without_a_stack
from isolation import ISOLATION

from pytest_llamastate.releases import LLAMA_STACK, OGX, Flavor, library_shortcuts
from pytest_llamastate.stack import shortcuts, sqlschema

skip_module_without_a_stack()

#: The TLS context behind a client of the flavor's own package: the REST object's (OGX
#: 1.5's OpenAPI client) or the httpx transport's (the stainless client of the others).
TLS_CONTEXT = (
    "client.api_client.rest_client.ssl_context"
    if "lazy-rest-tls" in library_shortcuts(FLAVOR)
    else "client._client._transport._pool._ssl_context"
)

#: After :data:`ISOLATION` in library mode: its stacks took the shared pieces.
SHARED = """
def test_the_shared_pieces_were_used(request):
    from pytest_llamastate.releases import detect, library_shortcuts
    from pytest_llamastate.stack.shortcuts import _ROUTE_TABLES, _SCHEMAS
    shortcuts = library_shortcuts(detect())
    assert any(_ROUTE_TABLES._templates.values()) == ("route-table" in shortcuts)
    assert bool(_SCHEMAS._schemas) == ("sql-schema" in shortcuts)
"""


def test_consecutive_stacks_see_nothing_of_each_other(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(ISOLATION + SHARED)
    pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--llama-stack-mode=library"
    ).assert_outcomes(passed=6)


def test_the_release_table_names_this_releases_shortcuts(pytester: pytest.Pytester) -> None:
    """The header says which shortcuts the installed release's library stacks take."""
    said = [shortcuts.describe_one(s) for s in sorted(library_shortcuts(FLAVOR))]
    pytester.makepyfile("def test_it(): pass")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    if said:
        line = f"llamastate: library stacks on {FLAVOR.name} *: {', '.join(said)}"
    else:
        line = "llamastate: library stacks start as * own client (no shortcut known)"
    result.stdout.fnmatch_lines([line])


STAINLESS = {"httpx-tls", "route-table", "sql-schema", "config-once"}
OPENAPI = {"lazy-rest-tls", "route-table", "sql-schema", "config-once"}


@pytest.mark.parametrize(
    ("flavor", "version", "expected"),
    [
        (LLAMA_STACK, "0.1.9", set()),
        (LLAMA_STACK, "0.2.12", STAINLESS),
        (LLAMA_STACK, "0.2.24", STAINLESS),
        (LLAMA_STACK, "0.3.5", STAINLESS),
        (LLAMA_STACK, "0.4.7", STAINLESS),
        (LLAMA_STACK, "0.6.1", STAINLESS),
        (LLAMA_STACK, "0.7.3", STAINLESS),
        (LLAMA_STACK, "0.8.0", set()),
        (OGX, "0.8.0", STAINLESS),
        (OGX, "1.0.4", STAINLESS),
        (OGX, "1.5.0", OPENAPI),
        (OGX, "1.6.0", set()),
    ],
)
def test_a_release_gets_the_shortcuts_of_its_line_and_none_elsewhere(
    monkeypatch: pytest.MonkeyPatch, flavor: Flavor, version: str, expected: set[str]
) -> None:
    monkeypatch.setattr(Flavor, "version", lambda self: version)
    assert library_shortcuts(flavor) == expected
    line = shortcuts.describe(flavor)
    assert ("no shortcut known" in line) == (not expected), line


#: How a user starts and stops a library client by hand (before llama-stack 0.2.19 it
#: needs ``initialize()``; before 0.4.3 it has no ``shutdown()``).
START = "" if FLAVOR.library_start == "constructor" else "client.initialize()"
STOP = "client.shutdown()" if FLAVOR.library_stop == "shutdown" else "pass"


def test_the_users_own_clients_are_untouched(pytester: pytest.Pytester) -> None:
    """After (and beside) the plugin's stacks: a user's httpx client keeps its verify=,
    a default one and the flavor's own HTTP client get their own context, and a library
    client built by hand builds its own route table with the stack's own functions."""
    pytester.makepyfile(
        f"""
        import importlib, ssl
        import httpx
        from pytest_llamastate.state.store import state_env

        def context(client):
            return {TLS_CONTEXT}

        def test_plugin_stack(llama_stack):
            assert llama_stack.client.files.list().data == []

        def test_plugin_stack_again(llama_stack):
            mine = ssl.create_default_context()
            with httpx.Client(verify=mine) as own, httpx.Client() as default:
                assert own._transport._pool._ssl_context is mine
                assert default._transport._pool._ssl_context is not mine
            assert llama_stack.client.files.list().data == []

        def test_by_hand(tmp_path, monkeypatch):
            for name, value in state_env(tmp_path).items():
                monkeypatch.setenv(name, value)
            lib = importlib.import_module("{FLAVOR.library_module}")
            routes = importlib.import_module("{FLAVOR.core}.server.routes")
            assert lib.initialize_route_impls is routes.initialize_route_impls
            http = importlib.import_module("{FLAVOR.client_package}")
            with httpx.Client() as default:
                shared = default._transport._pool._ssl_context
            other = http.{FLAVOR.client_class}(base_url="http://127.0.0.1:9")
            client = lib.{FLAVOR.library_client}("{FLAVOR.default_config}")
            {START}
            try:
                for built in (other, client):
                    assert isinstance(context(built), ssl.SSLContext)
                    assert context(built) is not shared
                assert context(other) is not context(client)
                assert client.files.list().data == []
            finally:
                {STOP}
        """
    )
    pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--llama-stack-mode=library"
    ).assert_outcomes(passed=3)


class _Impl:
    """An implementation the fake route table's endpoints call."""


def _fake_build(calls: list[object], extra: object) -> Any:
    """A route table builder whose endpoint holds its implementation and ``extra``."""

    def build(impls: dict[str, Any]) -> Any:
        calls.append(impls)
        impl = impls["api"]

        async def endpoint() -> object:
            return impl, extra

        return {"get": {"^/v1/x$": (endpoint, "/v1/x", None)}}

    return build


@pytest.mark.parametrize(("extra", "builds"), [(7, 1), ([], 3)])
def test_a_table_holding_more_than_constants_is_built_per_stack(extra: object, builds: int) -> None:
    """An endpoint that holds a constant is rebound; one that holds anything else (it
    could belong to one stack) makes every stack build its own table."""
    calls: list[object] = []
    tables = shortcuts._RouteTables()
    build = _fake_build(calls, extra)
    stacks = [{"api": _Impl()} for _ in range(3)]
    for impls in stacks:
        endpoint, path, _ = tables.table(build, ("x", FLAVOR.default_config), impls)["get"][
            "^/v1/x$"
        ]
        impl, held = asyncio.run(endpoint())
        assert (impl, held, path) == (impls["api"], extra, "/v1/x")
    assert len(calls) == builds


class _Helper:
    """What an implementation holds and serves routes from (llama-stack 0.2's ``rag_tool``)."""

    def __init__(self, impl: object) -> None:
        self.impl = impl

    async def endpoint(self) -> object:
        return self


def test_a_route_served_by_what_an_implementation_holds_is_rebound() -> None:
    """An endpoint bound to an object the implementation holds as an attribute: the table
    is built once, and each stack's copy calls that stack's own object."""
    calls: list[object] = []

    def build(impls: dict[str, Any]) -> Any:
        calls.append(impls)
        return {"post": {"^/v1/x$": (impls["api"].helper.endpoint, "/v1/x")}}

    tables = shortcuts._RouteTables()
    stacks = [{"api": _Impl()} for _ in range(3)]
    for impls in stacks:
        impls["api"].helper = _Helper(impls["api"])  # type: ignore[attr-defined]
    for impls in stacks:
        endpoint, _ = tables.table(build, ("x", FLAVOR.default_config), impls)["post"]["^/v1/x$"]
        assert asyncio.run(endpoint()) is impls["api"].helper  # type: ignore[attr-defined]
    assert len(calls) == 1


def _sqlite(path: Path, *script: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(";".join(script))
        db.commit()


def _rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: db.execute(f"SELECT * FROM {t}").fetchall() for t in tables}


def test_a_fresh_store_gets_the_first_fresh_starts_schema_and_no_rows(tmp_path: Path) -> None:
    """What the first start of a key created is read after it; a later fresh store gets
    the same tables and indexes, empty. A store with SQLite files already, another key,
    or no SQLite store (Postgres) get nothing. (The files only: the SQL stores skipping
    what they have runs with real stacks, in the isolation test.)"""
    templates = sqlschema.SchemaTemplates()
    first, later, other, used, postgres = (tmp_path / n for n in ("a", "b", "c", "d", "e"))
    for store in (first, later, other, used, postgres):
        store.mkdir()
    with templates.prepared("key", first):  # what a start does
        _sqlite(
            first / "sql.db",
            "CREATE TABLE t (id TEXT PRIMARY KEY, x INT)",
            "CREATE INDEX t_x ON t (x)",
            "INSERT INTO t VALUES ('row', 1)",
        )
        _sqlite(first / "sub" / "kv.db", "CREATE TABLE kv (key TEXT, value TEXT)")
        (first / "not-a-db.txt").write_text("x")
    with templates.prepared("key", later):
        assert _rows(later / "sql.db") == {"t": []}
        assert _rows(later / "sub" / "kv.db") == {"kv": []}
        with contextlib.closing(sqlite3.connect(later / "sql.db")) as db:
            names = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
        assert {"t", "t_x"} <= names
    assert not (later / "not-a-db.txt").exists()
    with templates.prepared("another key", other):
        assert list(other.iterdir()) == []
    _sqlite(used / "mine.db", "CREATE TABLE mine (x INT)")
    with templates.prepared("key", used):
        assert sorted(p.name for p in used.iterdir()) == ["mine.db"]
    with templates.prepared("key", None):
        assert list(postgres.iterdir()) == []
