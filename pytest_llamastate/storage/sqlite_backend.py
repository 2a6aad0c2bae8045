"""The ``sqlite`` storage backend (the default): a store's tables are SQLite files in its
folder, so the folder is the whole store: copied, kept and removed with it.

Seeds are written once per run and seed set into a template ``kvstore.db`` (shared by the
run's xdist workers, under a file lock) and copied into each store: a copy costs a file
copy, not a stack start, like pytest-postgresql's template databases.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from filelock import FileLock

from ..releases import Flavor
from ..releases.lines import REGISTRY_FILES
from . import sqlite
from .base import ConfigBlock, Row, SeedRows, SessionSpec, StateCopy, StoreTables

__all__ = ["SqliteStorage", "SqliteTables", "kvstore_path"]


def kvstore_path(folder: Path) -> Path:
    """The registry file: ``kvstore.db``, or a llama-stack 0.2 distribution's
    ``registry.db`` when only that one is there."""
    paths = [folder / name for name in REGISTRY_FILES]
    return next((p for p in paths if p.exists()), paths[0])


@dataclass(frozen=True)
class SqliteTables:
    """A store's tables as the SQLite files in ``folder``."""

    folder: Path
    backend: ClassVar[str] = "sqlite"
    prefixes_keys: ClassVar[bool] = False
    env: ClassVar[Mapping[str, str]] = {}
    database_url: ClassVar[str | None] = None
    title: ClassVar[str] = "SQLite"
    location: ClassVar[str] = ""
    open_hint: ClassVar[str] = ""

    @property
    def sqlite_folder(self) -> Path:
        return self.folder

    @property
    def kvstore_path(self) -> Path:
        return kvstore_path(self.folder)

    @property
    def files(self) -> list[Path]:
        """The registry and SQL store files, for integrity checks and leak reports."""
        return [self.kvstore_path, self.folder / "sql_store.db"]

    @property
    def registry_table(self) -> str:
        return f"{self.kvstore_path.name}:{sqlite.KV_TABLE}"

    def kv_rows(self, contains: str = "") -> list[tuple[str, str]]:
        return sqlite.kv_rows(self.kvstore_path, contains)

    def keys(self, prefix: str = "") -> list[str]:
        return sqlite.kv_keys(self.kvstore_path, prefix)

    def write_registry(self, rows: Mapping[str, str | None]) -> None:
        sqlite.write_entries(self.kvstore_path, rows)

    def table_rows(self) -> dict[str, frozenset[Row]]:
        """Keyed ``<file>:<table>``."""
        return {
            f"{db.name}:{table}": rows
            for db in self.files
            for table, rows in sqlite.table_rows(db).items()
        }

    def table_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """Over every ``*.db`` of the folder (a run config may give a provider a file of its
        own); a table is named ``file:table`` outside ``sql_store.db``."""
        kv: dict[str, int] = {}
        tables: dict[str, int] = {}
        for db in sorted(self.folder.glob("*.db")):
            if not sqlite.is_sqlite(db):
                continue  # Milvus Lite's file, say
            with sqlite.connect(db) as conn:
                for name in sqlite.table_names(conn):
                    if name == sqlite.KV_TABLE:
                        for prefix, count in conn.execute(
                            f"SELECT substr(key, 1, instr(key || ':', ':') - 1), COUNT(*) "
                            f"FROM {sqlite.KV_TABLE} GROUP BY 1"
                        ):
                            kv[str(prefix)] = kv.get(str(prefix), 0) + int(count)
                        continue
                    label = name if db.name == "sql_store.db" else f"{db.name}:{name}"
                    row = conn.execute(f"SELECT COUNT(*) FROM {sqlite.quoted(name)}").fetchone()
                    tables[label] = int(row[0])
        return dict(sorted(kv.items())), tables

    def integrity_problems(self) -> list[str]:
        return sqlite.integrity_problems(self.files)

    def marker(self) -> dict[str, Any]:
        return {}

    @contextmanager
    def reachable(self) -> Iterator[StoreTables]:
        yield self

    def drop(self) -> list[str]:
        return []  # removed with the folder


@dataclass
class SqliteStorage:
    """Stores whose tables are files in their folders; seed templates under ``templates``."""

    templates: Path
    name: ClassVar[str] = "sqlite"
    label: ClassVar[str] = "SQLite"
    prefixes_keys: ClassVar[bool] = SqliteTables.prefixes_keys
    config_types: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def for_session(cls, spec: SessionSpec) -> SqliteStorage:
        return cls(spec.templates)

    @classmethod
    def default_config(cls, flavor: Flavor) -> Path:
        return flavor.default_config

    @classmethod
    def probe_env(cls) -> dict[str, str]:
        return {}

    @classmethod
    def owns(cls, store_env: Mapping[str, str]) -> bool:
        return True

    @classmethod
    def check_block(cls, block: ConfigBlock) -> None:
        """Nothing beyond the paths, which every config's check resolves."""

    @classmethod
    def reopen(cls, folder: Path, marker: Mapping[str, Any]) -> SqliteTables:
        return SqliteTables(folder)

    def template(self, seeds: SeedRows) -> Path:
        """The template ``kvstore.db`` of ``seeds``, built on first use (once per run, locked)."""
        db = self.templates / (re.sub(r"[^\w.-]", "_", seeds.key) + ".db")
        if db.exists():
            return db
        self.templates.mkdir(mode=0o700, exist_ok=True)
        with FileLock(str(db.with_suffix(".lock"))):
            if not db.exists():
                partial = db.with_suffix(".partial")
                partial.unlink(missing_ok=True)
                sqlite.write_entries(partial, seeds.rows)
                sqlite.checkpoint(partial, journal_delete=True)
                partial.rename(db)
        return db

    def tables_for(self, folder: Path) -> SqliteTables:
        """The tables of the store in ``folder``."""
        return SqliteTables(folder)

    def _seeded(self, folder: Path, seeds: SeedRows | None) -> SqliteTables:
        tables = self.tables_for(folder)
        if seeds is None:
            return tables
        if tables.kvstore_path.exists():  # a copied state template's: the rows go on top
            tables.write_registry(seeds.rows)
        else:
            shutil.copyfile(self.template(seeds), tables.kvstore_path)
        return tables

    def create(self, folder: Path, seeds: SeedRows | None, copy: StateCopy | None) -> SqliteTables:
        return self._seeded(folder, seeds)

    def persistent(
        self, folder: Path, name: str, *, fresh: bool, seeds: SeedRows | None
    ) -> tuple[SqliteTables, bool]:
        """Made anew with the folder: ``fresh`` says whether it was."""
        return (self._seeded(folder, seeds) if fresh else self.tables_for(folder)), fresh

    def for_state_template(self, folder: Path, seeds: SeedRows | None) -> SqliteTables:
        return self._seeded(folder, seeds)

    def seal(self, tables: StoreTables, folder: Path) -> list[tuple[str, str]]:
        return []  # the files are sealed with the folder

    def keep(self, tables: StoreTables) -> None:
        pass  # kept with the folder

    def drop(self, tables: StoreTables) -> None:
        pass  # removed with the folder

    def header(self) -> list[str]:
        return []

    def close(self, *, last: bool) -> None:
        pass
