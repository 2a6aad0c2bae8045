"""The janitor: creates, clones, drops and prunes the plugin's databases.

Per-test isolation on Postgres costs a ``CREATE DATABASE ... TEMPLATE`` and a ``DROP``
per store, so both go over one connection kept open for the run. A run that is killed
cannot drop what it made; every database therefore records who made it (a ``COMMENT``
with kind, run, host, pid and time) and the next run prunes what belongs to processes
that are gone, never a persistent database and never one that is in use.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from .client import (
    DB_PREFIX,
    PostgresError,
    PostgresURL,
    database_name,
    database_url,
    explain_error,
    open_connection,
    quote_identifier,
    run_coroutine,
)

__all__ = ["DatabaseInfo", "Janitor"]

_T = TypeVar("_T")


@dataclass(frozen=True)
class DatabaseInfo:
    """A database of this plugin and what its comment records about who made it."""

    name: str
    kind: str
    run: str
    host: str
    pid: int
    created: float
    is_template: bool
    connections: int
    #: The store folder the database belongs to, if any.
    store: str = ""

    def stale(self, *, max_age: float, now: float) -> bool:
        """Of no use any more: its store folder of this host is gone (a kept store's
        database lives as long as the folder), or, without one, made by a process of this
        host that is gone; elsewhere, older than ``max_age``. Never while in use, never a
        persistent database: those are meant to survive runs.
        """
        if self.kind == "persistent" or self.connections:
            return False
        if self.host == socket.gethostname():
            if self.store:
                return not os.path.isdir(self.store)
            if self.pid and not _alive(self.pid):
                return True
        return now - self.created > max_age


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Janitor:
    """Creates, clones, drops and prunes this plugin's databases over one connection.

    The connection goes to the URL's database (``postgres`` by default), never to one it
    manages: a database with a connection cannot be dropped or used as a template.
    Each database gets a ``COMMENT`` (JSON: kind, run, host, pid, created) so a later run
    can tell databases of a run that is gone from those of one still going.
    """

    def __init__(self, url: str | PostgresURL, *, run_id: str, owner_pid: int | None = None):
        self.url = PostgresURL.parse(url)
        self.run_id = run_id
        self.owner_pid = owner_pid or os.getpid()
        self._conn: Any = None
        self._count = 0
        # One connection: a test's create and the reaper thread's drop take turns on it.
        self._lock = threading.Lock()

    def _call(self, work: Callable[[Any], Coroutine[Any, Any, _T]]) -> _T:
        async def go() -> _T:
            if self._conn is None or self._conn.is_closed():
                self._conn = await open_connection(self.url)
            return await work(self._conn)

        try:
            with self._lock:
                return run_coroutine(go())
        except PostgresError:
            raise
        except Exception as exc:
            raise explain_error(self.url, exc) from None

    def new_name(self, worker: str = "main") -> str:
        """``llamastate_<run>_<worker>_<n>``, unique within this janitor's run."""
        self._count += 1
        return database_name(self.run_id, worker, str(self._count))

    def create(
        self, name: str, *, template: str | None = None, kind: str = "test", store: str = ""
    ) -> str:
        """Create ``name`` (``TEMPLATE`` another database if given) and return its URL.

        ``store`` is the folder the database belongs to: it is pruned once that is gone.
        """
        comment = json.dumps(
            {
                "pytest_llamastate": 1,
                "kind": kind,
                "run": self.run_id,
                "host": socket.gethostname(),
                "pid": self.owner_pid,
                "created": round(time.time(), 3),
                "store": store,
            }
        ).replace("'", "''")
        sql = f"CREATE DATABASE {quote_identifier(name)}"
        if template:
            sql += f" TEMPLATE {quote_identifier(template)}"

        async def work(conn: Any) -> None:
            await conn.execute(sql)
            await conn.execute(f"COMMENT ON DATABASE {quote_identifier(name)} IS '{comment}'")

        self._call(work)
        return database_url(self.url, name)

    def mark_template(self, name: str, is_template: bool = True) -> None:
        """Let (or stop) ``name`` serve as a ``TEMPLATE``; templates also refuse ``DROP``."""
        flag = "true" if is_template else "false"

        async def work(conn: Any) -> None:
            await conn.execute(f"ALTER DATABASE {quote_identifier(name)} WITH IS_TEMPLATE {flag}")

        self._call(work)

    def end_sessions(self, name: str) -> None:
        """End every connection to ``name``: a database is copied only when none is left."""

        async def work(conn: Any) -> None:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )

        self._call(work)

    def exists(self, name: str) -> bool:
        async def work(conn: Any) -> bool:
            return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))

        return self._call(work)

    def drop(self, name: str) -> bool:
        """Drop ``name`` after ending its connections; return whether it existed.

        Refuses names without :data:`DB_PREFIX`: only the plugin's databases are dropped.
        """
        if not name.startswith(DB_PREFIX):
            raise PostgresError(f"{self.url.masked}: refusing to drop {name!r}, not ours")

        async def work(conn: Any) -> bool:
            row = await conn.fetchrow(
                "SELECT datistemplate FROM pg_database WHERE datname = $1", name
            )
            if row is None:
                return False
            if row["datistemplate"]:
                await conn.execute(
                    f"ALTER DATABASE {quote_identifier(name)} WITH IS_TEMPLATE false"
                )
            if conn.get_server_version().major >= 13:
                await conn.execute(f"DROP DATABASE IF EXISTS {quote_identifier(name)} WITH (FORCE)")
            else:
                await conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = $1 AND pid <> pg_backend_pid()",
                    name,
                )
                await conn.execute(f"DROP DATABASE IF EXISTS {quote_identifier(name)}")
            return True

        return self._call(work)

    def databases(self) -> list[DatabaseInfo]:
        """This plugin's databases on the server (by prefix and comment), sorted by name."""

        async def work(conn: Any) -> list[Any]:
            return list(
                await conn.fetch(
                    "SELECT d.datname, d.datistemplate, shobj_description(d.oid, 'pg_database')"
                    " AS comment, (SELECT count(*) FROM pg_stat_activity a"
                    " WHERE a.datid = d.oid) AS connections"
                    " FROM pg_database d WHERE starts_with(d.datname, $1) ORDER BY 1",
                    DB_PREFIX,
                )
            )

        infos = []
        for row in self._call(work):
            try:
                meta = json.loads(row["comment"] or "{}")
            except ValueError:
                meta = {}
            if not isinstance(meta, dict) or meta.get("pytest_llamastate") != 1:
                continue  # our prefix, not our comment: someone else's; leave it alone
            infos.append(
                DatabaseInfo(
                    name=row["datname"],
                    kind=str(meta.get("kind", "")),
                    run=str(meta.get("run", "")),
                    host=str(meta.get("host", "")),
                    pid=int(meta.get("pid") or 0),
                    created=float(meta.get("created") or 0),
                    is_template=bool(row["datistemplate"]),
                    connections=int(row["connections"]),
                    store=str(meta.get("store") or ""),
                )
            )
        return infos

    def prune(self, *, max_age: float = 24 * 3600.0, keep_runs: Iterable[str] = ()) -> list[str]:
        """Drop stale databases (see :meth:`DatabaseInfo.stale`) of runs other than ours."""
        keep = {self.run_id, *keep_runs}
        now = time.time()
        dropped = []
        for info in self.databases():
            if info.run not in keep and info.stale(max_age=max_age, now=now):
                self.drop(info.name)
                dropped.append(info.name)
        return dropped

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                run_coroutine(conn.close(timeout=5))
            except Exception:  # closing a dead connection must not fail a teardown
                conn.terminate()
