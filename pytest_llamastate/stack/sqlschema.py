"""The ``sql-schema`` shortcut: a fresh store's SQLite tables created in one script.

Profiled on OGX 1.5 (per stack, CPU): ~100 of a start's ~120 ms is its SQL stores
setting up their schema in a fresh store: ~35 tables, columns and indexes, each
``create_table`` / ``add_column_if_not_exists`` / ``create_index`` a transaction of its
own with SQLAlchemy reflecting the database first. For one config and release the
resulting schema is the same in every fresh store.

So the first stack of a (release, config) that starts on a fresh store is left alone,
and the schema it created (``sqlite_master``: tables and indexes, no rows) is read from
each SQLite file it created in its store. A later stack of the same key on a fresh
store gets those files created beforehand, in one ``executescript`` each, and while it
starts, its SQL stores skip the steps whose outcome that schema already is (a column or
index it has, a table it has once the engine exists: ``schemaskip``, in the plugin's
process for a library stack, in a forked server's own); everything else runs as usual.
Each store still gets files of its own, empty like a fresh one's: only DDL is shared.
A store that is not fresh (persistent, templated, seeded), a Postgres store, or a file
outside the store is never touched.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..releases import Flavor, sql_store_module
from .schemaskip import skipping

__all__ = ["SchemaTemplates"]

_SQLITE_HEADER = b"SQLite format 3\x00"


@dataclass(frozen=True)
class Schema:
    """One SQLite file's schema as a fresh start leaves it."""

    ddl: tuple[str, ...]
    #: Columns per table.
    columns: Mapping[str, frozenset[str]]
    indexes: frozenset[str]
    journal_mode: str
    user_version: int

    @classmethod
    def read(cls, path: Path) -> Schema:
        with contextlib.closing(sqlite3.connect(path)) as db:
            rows = db.execute(
                "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL "
                "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY rowid"
            ).fetchall()
            columns = {
                name: frozenset(c[1] for c in db.execute(f'PRAGMA table_info("{name}")'))
                for kind, name, _ in rows
                if kind == "table"
            }
            return cls(
                ddl=tuple(sql for _, _, sql in rows),
                columns=columns,
                indexes=frozenset(name for kind, name, _ in rows if kind == "index"),
                journal_mode=db.execute("PRAGMA journal_mode").fetchone()[0],
                user_version=db.execute("PRAGMA user_version").fetchone()[0],
            )

    def create(self, path: Path) -> None:
        """The file with this schema. Not synced to disk (a test's throwaway store): an
        fsync costs tens of milliseconds on a busy disk, more than the rest together."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
            db.execute("PRAGMA synchronous=OFF")
            db.execute(f"PRAGMA journal_mode={self.journal_mode}")
            db.executescript(
                f"BEGIN; {'; '.join(self.ddl)}; PRAGMA user_version={self.user_version}; COMMIT;"
            )


def _sqlite_files(store: Path) -> set[Path]:
    """The SQLite databases in ``store`` (by their header), relative to it."""
    found = set()
    for path in store.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file():
                with path.open("rb") as file:
                    if file.read(16) == _SQLITE_HEADER:
                        found.add(path.relative_to(store))
    return found


class SchemaTemplates:
    """The schema each (release, config) start leaves in a fresh store, per process."""

    def __init__(self) -> None:
        self._schemas: dict[object, dict[Path, Schema]] = {}

    @contextlib.contextmanager
    def prepared(self, key: object, store: Path | None) -> Iterator[dict[str, Schema]]:
        """While a stack of ``key`` starts on ``store`` (``None``: not SQLite files): a
        fresh store gets the files of the key's schema, yielded by their resolved path
        (none for the first fresh start of the key, whose schema is read after it)."""
        fresh = store is not None and not _sqlite_files(store)
        schemas = self._schemas.get(key)
        if store is None or schemas is None or not fresh:
            yield {}  # the first stack, or a store that is not fresh: as usual
            if store is not None and schemas is None and fresh:
                found = _sqlite_files(store)
                self._schemas[key] = {name: Schema.read(store / name) for name in found}
            return
        known = {}
        for name, schema in schemas.items():
            schema.create(store / name)
            known[str((store / name).resolve())] = schema
        yield known

    @contextlib.contextmanager
    def applied(self, flavor: Flavor, key: object, store: Path | None) -> Iterator[None]:
        """:meth:`prepared`, and the release's SQL stores skipping what the files have,
        while a library stack starts in this process."""
        module = sql_store_module(flavor)
        with (
            self.prepared(key, store) as known,
            skipping(module, known) if known else contextlib.nullcontext(),
        ):
            yield
