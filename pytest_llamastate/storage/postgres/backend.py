"""Stores on Postgres: a database of its own for every store, on one server per session.

pytest-postgresql's answer, for Llama Stack's ``kv_postgres`` / ``sql_postgres``: each
store's database is created ``TEMPLATE`` a database holding its seeds (built once per run
and seed set, across xdist workers), and dropped when the store is released. The store
folder still holds files, config and logs; a kept store keeps its database as long as its
folder exists, which is also how a later run knows what a killed one left behind.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from filelock import FileLock

from ...releases import Flavor
from ..base import ConfigBlock, SeedRows, SessionSpec, StateCopy, Storage, StorageConfigError
from ..sqlite_backend import SqliteStorage
from .client import PostgresError, PostgresURL, check_server, database_name, kv_table, write_kv_rows
from .database import StoreDatabase
from .janitor import Janitor
from .server import PostgresServer, acquire
from .tables import replace_text, text_columns_with

__all__ = ["PostgresStorage"]

#: What a Postgres block must name as the store does: key, variable, the stack's default.
_OWN_DATABASE = (
    ("db", "POSTGRES_DB", "llamastack"),
    ("host", "POSTGRES_HOST", "localhost"),
    ("port", "POSTGRES_PORT", "5432"),
)
#: What a Postgres store's variables look like, to check a config before any store exists.
_PROBE = {
    "POSTGRES_HOST": "127.0.0.1",
    "POSTGRES_PORT": "5432",
    "POSTGRES_DB": "llamastate_check",
    "POSTGRES_USER": "llamastate",
    "POSTGRES_PASSWORD": "",
}


def metadata_kv_table(config: Mapping[str, Any]) -> str | None:
    """The ``table_name`` of a run config's metadata store backend, where a store's registry
    rows are (``None``: unnamed, the flavor's default)."""
    storage = config.get("storage")
    storage = storage if isinstance(storage, Mapping) else {}
    stores, backends = storage.get("stores"), storage.get("backends")
    metadata = stores.get("metadata") if isinstance(stores, Mapping) else None
    name = metadata.get("backend") if isinstance(metadata, Mapping) else None
    backend = backends.get(str(name)) if isinstance(backends, Mapping) else None
    table = backend.get("table_name") if isinstance(backend, Mapping) else None
    return str(table) if table else None


@dataclass
class PostgresStorage:
    """The databases of one pytest process's stores, on ``server``."""

    server: PostgresServer
    janitor: Janitor
    flavor: Flavor
    #: The run's folder for seed templates: their build locks are there.
    templates: Path
    worker: str
    #: The registry's table in every store database (the config's ``table_name``).
    kv_table: str
    _templates: dict[str, str] = field(default_factory=dict, repr=False)
    name: ClassVar[str] = "postgres"
    label: ClassVar[str] = "Postgres"
    prefixes_keys: ClassVar[bool] = StoreDatabase.prefixes_keys
    config_types: ClassVar[tuple[str, ...]] = ("kv_postgres", "sql_postgres")

    @classmethod
    def for_session(cls, spec: SessionSpec) -> Storage:
        """The session's server (the one at ``spec.url``, or a throwaway one on
        ``spec.data_dir``, started or joined) and janitor. An xdist controller runs no test:
        it checks a given server, so a bad URL stops the run at once, and stores nothing.
        A worker's databases belong to the controller's life (its parent), so pruning
        spares them while the run lasts. Raises ``PostgresError`` (and what reading the
        config raises)."""
        if spec.controller:
            if spec.url:
                check_server(spec.url)
            return SqliteStorage.for_session(spec)
        server = acquire(spec.url, data_dir=spec.data_dir)
        try:
            janitor = Janitor(
                server.url,
                run_id=spec.run_id,
                owner_pid=os.getppid() if spec.worker else os.getpid(),
                explain=server.explain,
            )
            janitor.prune()  # what runs that are gone left behind
            table = metadata_kv_table(spec.config()) or kv_table(spec.flavor)
        except BaseException:
            server.release()
            raise
        return cls(server, janitor, spec.flavor, spec.templates, spec.worker or "main", table)

    @classmethod
    def default_config(cls, flavor: Flavor) -> Path:
        return flavor.default_postgres_config

    @classmethod
    def probe_env(cls) -> dict[str, str]:
        return dict(_PROBE)

    @classmethod
    def owns(cls, store_env: Mapping[str, str]) -> bool:
        return "POSTGRES_DB" in store_env

    @classmethod
    def check_block(cls, block: ConfigBlock) -> None:
        """A Postgres block must name the store's database, server and port (the
        ``POSTGRES_*`` variables the store sets), or tests would share one table."""
        for key, variable, default in _OWN_DATABASE:
            raw = str(block.block.get(key, default))
            try:
                value = block.resolve(raw)
            except KeyError as exc:
                value = f"${{env.{exc.args[0]}}} (unset)"
            if value != block.store_env[variable]:
                raise StorageConfigError(
                    f"{block.where}.{key} = {value!r} is not the test's own database "
                    f"{key} {block.store_env[variable]!r}, so state would leak between tests; "
                    f"use ${{env.{variable}}}"
                )

    @classmethod
    def reopen(cls, folder: Path, marker: Mapping[str, Any]) -> StoreDatabase | None:
        data = marker.get("database")
        return StoreDatabase.from_marker(data) if isinstance(data, Mapping) else None

    def _database(self, name: str) -> StoreDatabase:
        password_file = ""
        if self.server.data_dir is not None:
            password_file = str(self.server.data_dir / "password")
        url = PostgresURL.parse(self.server.url).with_database(name)
        return StoreDatabase(url, self.kv_table, self.flavor, password_file)

    def _template(self, seeds: SeedRows) -> str:
        """The template database of ``seeds``: built once per run, whichever worker asks first."""
        if seeds.key in self._templates:
            return self._templates[seeds.key]
        name = database_name("tmpl", self.janitor.run_id, seeds.key)
        self.templates.mkdir(mode=0o700, exist_ok=True)
        with FileLock(str(self.templates / f"{name}.lock")):
            if not self.janitor.exists(name):
                self.janitor.create(name, kind="template")
                write_kv_rows(
                    self._database(name).url,
                    self.kv_table,
                    seeds.rows.items(),
                    flavor=self.flavor,
                )
                self.janitor.mark_template(name)
        self._templates[seeds.key] = name
        return name

    def create(self, folder: Path, seeds: SeedRows | None, copy: StateCopy | None) -> StoreDatabase:
        """A new database of the store's own, holding ``seeds``: a copy of the seed
        template, or of a state template's database (its folder's path rewritten to the
        store's, the seeds written on top)."""
        name = self.janitor.new_name(self.worker)
        copied = self.reopen(copy.folder, copy.marker) if copy is not None else None
        if copy is None or copied is None:
            template = self._template(seeds) if seeds else None
            self.janitor.create(name, template=template, store=str(folder))
            return self._database(name)
        self.janitor.create(name, template=copied.name, store=str(folder))
        database = self._database(name)
        if copy.references:
            replace_text(database.url, copy.references, str(copy.folder), str(folder))
        if seeds:
            database.write_registry(seeds.rows)
        return database

    def for_state_template(self, folder: Path, seeds: SeedRows | None) -> StoreDatabase:
        """A state template's database, made anew, named by its folder: every worker (and,
        reused, every run) finds the one built. Kept while the folder is."""
        digest = hashlib.sha256(str(folder).encode()).hexdigest()[:16]
        name = database_name("state", digest)
        self.janitor.drop(name)
        self.janitor.create(name, kind="state-template", store=str(folder))
        database = self._database(name)
        if seeds:
            database.write_registry(seeds.rows)
        return database

    def seal(self, tables: Any, folder: Path) -> list[tuple[str, str]]:
        """After the build: the columns that name the template's folder; the database
        becomes a template, with no session left on it (a copy needs none)."""
        assert isinstance(tables, StoreDatabase)
        references = text_columns_with(tables.url, str(folder))
        self.janitor.end_sessions(tables.name)
        self.janitor.mark_template(tables.name)
        return references

    def persistent(
        self, folder: Path, name: str, *, fresh: bool, seeds: SeedRows | None
    ) -> tuple[StoreDatabase, bool]:
        """A persistent store's named database, made anew when ``fresh`` (or missing)."""
        # Named by the store's folder too: two projects on one server may both have a "soak".
        digest = hashlib.sha256(str(folder).encode()).hexdigest()[:8]
        db_name = database_name("persistent", name, digest)
        if fresh:
            self.janitor.drop(db_name)
        made = fresh or not self.janitor.exists(db_name)
        database = self._database(db_name)
        if made:
            self.janitor.create(db_name, kind="persistent", store=str(folder))
            if seeds:
                database.write_registry(seeds.rows)
        return database, made

    def keep(self, tables: Any) -> None:
        """The database lives as long as the store's folder, past this run.

        A server gone meanwhile is a warning, not an error of the test that is over: the
        database then goes with the next run, as a killed run's would.
        """
        if not isinstance(tables, StoreDatabase):
            return
        try:
            self.janitor.keep(tables.name)
        except PostgresError as exc:
            warnings.warn(
                f"kept store database {tables.name}: not marked kept: {exc}",
                RuntimeWarning,
                stacklevel=2,
            )

    def drop(self, tables: Any) -> None:
        if isinstance(tables, StoreDatabase):
            self.janitor.drop(tables.name)

    def header(self) -> list[str]:
        url = PostgresURL.parse(self.server.url).masked
        how = (
            f"a throwaway server in {self.server.data_dir}"
            if self.server.started
            else "a given server"
        )
        return [f"llamastate: backend=postgres, a database per store on {url} ({how})"]

    def close(self, *, last: bool) -> None:
        """Drop this run's seed templates when ``last`` (under xdist, the next run prunes
        them), then let go of the janitor's connection and the server."""
        try:
            if last:
                for info in self.janitor.databases():
                    if info.kind == "template" and info.run == self.janitor.run_id:
                        self.janitor.drop(info.name)
        finally:
            self.janitor.close()
            self.server.release()
