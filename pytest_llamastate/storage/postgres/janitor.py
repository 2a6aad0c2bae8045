"""The janitor: creates, clones, drops and prunes the plugin's databases.

Per-test isolation on Postgres costs a ``CREATE DATABASE ... TEMPLATE`` and a ``DROP``
per store, so both go over one connection kept open for the run. A run that is killed
cannot drop what it made; every database therefore records who made it (a ``COMMENT``
with kind, run, host, pid, the process's start time, and whether it was kept on purpose)
and the next run prunes what belongs to processes that are gone, whatever their folders
still hold; never a persistent database, never a kept one whose folder is still there,
never one that is in use.
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

from ...process.lifetime import alive
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

__all__ = ["DatabaseInfo", "Janitor", "process_start"]

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
    #: When the owner process started (:func:`process_start`; "" where unknown).
    started: str = ""
    #: Kept on purpose (a kept store's, a state template's): it lives as long as its folder.
    kept: bool = False

    def stale(self, *, max_age: float, now: float) -> bool:
        """Of no use any more. Never while in use, never a persistent database (those are
        meant to survive runs). On this host: never while its owner process runs (the same
        pid *and* start time: a reused pid is another process); once the owner is gone,
        a kept one when its store folder is gone too, any other at once (a killed run
        left it, whatever its folders say). Elsewhere: older than ``max_age``.
        """
        if self.kind == "persistent" or self.connections:
            return False
        if self.host == socket.gethostname():
            if _alive(self.pid, self.started):
                return False
            return not (self.kept and os.path.isdir(self.store))
        return now - self.created > max_age


def process_start(pid: int) -> str:
    """When process ``pid`` started, as ``<boot id>:<clock ticks since boot>`` (Linux), so a
    pid reused after the owner's death (or a reboot) does not pass for the owner; "" where
    the system does not say."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rpartition(")")[2].split()
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            boot = f.read().strip()
        return f"{boot}:{fields[19]}"  # field 22 of stat; [0] here is field 3
    except (OSError, IndexError):
        return ""


def _alive(pid: int, started: str) -> bool:
    if pid <= 0 or not alive(pid):
        return False
    return not started or process_start(pid) in (started, "")


def _meta(comment: str | None) -> dict[str, Any] | None:
    """What the plugin's ``COMMENT`` on a database records; ``None`` if it is not ours."""
    try:
        meta = json.loads(comment or "{}")
    except ValueError:
        return None
    return meta if isinstance(meta, dict) and meta.get("pytest_llamastate") == 1 else None


def _comment_sql(name: str, comment: str) -> str:
    quoted = comment.replace("'", "''")
    return f"COMMENT ON DATABASE {quote_identifier(name)} IS '{quoted}'"


class Janitor:
    """Creates, clones, drops and prunes this plugin's databases over one connection.

    The connection goes to the URL's database (``postgres`` by default), never to one it
    manages: a database with a connection cannot be dropped or used as a template.
    Each database gets a ``COMMENT`` (JSON: kind, run, host, pid, created) so a later run
    can tell databases of a run that is gone from those of one still going.
    """

    def __init__(
        self,
        url: str | PostgresURL,
        *,
        run_id: str,
        owner_pid: int | None = None,
        explain: Callable[[BaseException], str | None] | None = None,
    ):
        self.url = PostgresURL.parse(url)
        #: A throwaway server's word on a failed call (``PostgresServer.explain``).
        self.explain = explain
        self.run_id = run_id
        self.owner_pid = owner_pid or os.getpid()
        self.owner_started = process_start(self.owner_pid)
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
            if self.explain is not None and (said := self.explain(exc)):
                raise PostgresError(f"{self.url.masked}: {said}") from None
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
                "started": self.owner_started,
                "created": round(time.time(), 3),
                "store": store,
                "kept": kind == "state-template",
            }
        )
        sql = f"CREATE DATABASE {quote_identifier(name)}"
        if template:
            sql += f" TEMPLATE {quote_identifier(template)}"

        async def work(conn: Any) -> None:
            await conn.execute(sql)
            await conn.execute(_comment_sql(name, comment))

        self._call(work)
        return database_url(self.url, name)

    def keep(self, name: str) -> None:
        """Record that ``name`` is kept on purpose: it then lives as long as its store folder
        (unmarked, it goes once its owner is gone, as a killed run's do)."""

        async def work(conn: Any) -> None:
            raw = await conn.fetchval(
                "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
                name,
            )
            meta = _meta(raw)
            if meta is not None and not meta.get("kept"):
                await conn.execute(_comment_sql(name, json.dumps({**meta, "kept": True})))

        self._call(work)

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
            if (meta := _meta(row["comment"])) is None:
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
                    started=str(meta.get("started") or ""),
                    kept=bool(meta.get("kept")) or meta.get("kind") == "state-template",
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
