"""Opening a store's SQLite databases: the one place the plugin talks to ``sqlite3``.

Registry reads and writes, seed templates, state templates and integrity checks all open
the stack's own database files; a path with ``?`` or ``#`` in it, a file that is not a
database, and a WAL that still holds the last commits are handled here once.
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "KV_TABLE",
    "StoreCorruptError",
    "checkpoint",
    "connect",
    "integrity_problems",
    "is_sqlite",
    "kv_keys",
    "kv_rows",
    "quoted",
    "table_names",
    "table_rows",
    "write_entries",
]

#: The table of every ``kv_sqlite`` file, whatever the namespace.
KV_TABLE = "kvstore"
_SQLITE_HEADER = b"SQLite format 3\x00"


class StoreCorruptError(RuntimeError):
    """A store's database cannot be read; the message names the file."""


@contextmanager
def connect(db: Path, *, readonly: bool = True) -> Iterator[sqlite3.Connection]:
    """Open a store database; one SQLite cannot read becomes ``StoreCorruptError``.

    ``as_uri()`` percent-encodes the path, so a folder named with ``?``, ``#`` or ``%``
    still opens (a bare ``file:{db}`` URI would be cut there).
    """
    uri = db.absolute().as_uri() + ("?mode=ro" if readonly else "")
    try:
        with closing(sqlite3.connect(uri, uri=True, timeout=30)) as conn:
            yield conn
    except sqlite3.DatabaseError as exc:
        doing = "cannot read" if readonly else "cannot write to"
        raise StoreCorruptError(f"{db}: {doing} the database ({exc})") from None


def table_names(conn: sqlite3.Connection) -> list[str]:
    """The user tables of a database, sorted (SQLite's own ``sqlite_*`` tables left out)."""
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name"
    ).fetchall()
    return [str(name) for (name,) in rows]


def table_rows(db: Path) -> dict[str, frozenset[tuple[Any, ...]]]:
    """Every row of every table of ``db`` by table; nothing when the file does not exist."""
    if not db.exists():
        return {}
    with connect(db) as conn:
        return {
            table: frozenset(tuple(r) for r in conn.execute(f"SELECT * FROM {quoted(table)}"))
            for table in table_names(conn)
        }


def quoted(name: str) -> str:
    """An identifier (table or column name) quoted for SQL text."""
    return '"' + name.replace('"', '""') + '"'


def checkpoint(db: Path, *, journal_delete: bool = False) -> None:
    """Fold the WAL into the main file, so the file alone holds every commit.

    ``journal_delete`` also leaves WAL mode, for a file that is copied as a template.
    """
    with connect(db, readonly=False) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        if journal_delete:
            conn.execute("PRAGMA journal_mode=DELETE")


#: SQLite's primary result codes that say the file system failed, not the file: a full
#: disk, a read-only one, permissions, an I/O error (``disk I/O error`` is what a WAL
#: database gives when its ``-shm`` cannot grow on a full disk), as the OS error they are.
_OS_RESULTS = {13: errno.ENOSPC, 8: errno.EROFS, 3: errno.EACCES, 14: errno.EACCES, 10: errno.EIO}


def integrity_problems(dbs: Iterable[Path]) -> list[str]:
    """Checkpoint each existing database and run ``PRAGMA integrity_check``.

    Returns one line per problem; empty when every database is ``ok``. A file system
    that fails (``_OS_RESULTS``) raises ``OSError`` naming the file: a store on a full
    disk is not a corrupt store, and must never be offered for a reset.
    """
    problems = []
    for db in dbs:
        if not db.exists():
            continue
        try:
            with closing(sqlite3.connect(db, timeout=30)) as conn:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                rows = [str(r[0]) for r in conn.execute("PRAGMA integrity_check").fetchall()]
        except sqlite3.DatabaseError as exc:
            code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
            if code in _OS_RESULTS:
                raise OSError(_OS_RESULTS[code], str(exc), str(db)) from exc
            rows = [str(exc)]
        if rows != ["ok"]:
            problems.append(f"{db}: {'; '.join(rows[:5])}")
    return problems


def is_sqlite(path: Path) -> bool:
    """Whether ``path`` is an SQLite database file (not Milvus Lite's, say)."""
    try:
        with path.open("rb") as f:
            return f.read(len(_SQLITE_HEADER)) == _SQLITE_HEADER
    except OSError:
        return False


def _select(db: Path, sql: str, params: tuple[Any, ...], what: str) -> list[tuple[Any, ...]]:
    """Rows of a query on ``db``'s kv table; none when the file or table does not exist."""
    if not db.exists():
        return []
    with connect(db) as conn:
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            if "no such table" in str(exc):
                return []
            raise StoreCorruptError(f"{db}: cannot read the {what} ({exc})") from None


def kv_rows(db: Path, contains: str = "") -> list[tuple[str, str]]:
    """Every ``(key, value)`` of ``db``'s kv table whose key contains ``contains``, sorted."""
    rows = _select(
        db,
        f"SELECT key, value FROM {KV_TABLE} WHERE instr(key, ?) > 0 ORDER BY key",
        (contains,),
        "registry",
    )
    return [(str(key), str(value)) for key, value in rows]


def kv_keys(db: Path, prefix: str = "") -> list[str]:
    """Every key of ``db``'s kv table starting with ``prefix``, sorted."""
    rows = _select(
        db,
        f"SELECT key FROM {KV_TABLE} WHERE substr(key, 1, ?) = ? ORDER BY key",
        (len(prefix), prefix),
        "keys",
    )
    return [str(key) for (key,) in rows]


def write_entries(db: Path, rows: Mapping[str, str | None]) -> None:
    """Insert, replace (JSON text) or delete (``None``) kv rows in one transaction.

    The table is created as the stack itself creates it, so a store seeded before any
    stack ever ran is one the stack opens as its own.
    """
    with connect(db, readonly=False) as conn, conn:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {KV_TABLE} "
            "(key TEXT PRIMARY KEY, value TEXT, expiration TIMESTAMP)"
        )
        for key, value in rows.items():
            if value is None:
                conn.execute(f"DELETE FROM {KV_TABLE} WHERE key = ?", (key,))
            else:
                conn.execute(
                    f"INSERT OR REPLACE INTO {KV_TABLE} (key, value, expiration) "
                    "VALUES (?, ?, NULL)",
                    (key, value),
                )
