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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from filelock import FileLock

from ...releases import Flavor
from ...state.seed_rows import IN_DATABASE, BuiltTemplate, TemplateCache, seed_rows
from ...state.seeds import ToolgroupSeed, seed_set_key
from ...state.stackconfig import StackConfig
from ...state.store import LlamaStore
from .client import (
    PostgresError,
    PostgresURL,
    StoreDatabase,
    check_server,
    database_name,
    kv_table,
    write_kv_rows,
)
from .janitor import Janitor
from .server import PostgresServer, acquire
from .tables import replace_text, text_columns_with

__all__ = ["PostgresStores", "reachable"]


@dataclass
class PostgresStores:
    """The databases of one pytest process's stores, on ``server``."""

    server: PostgresServer
    janitor: Janitor
    flavor: Flavor
    templates: TemplateCache
    worker: str
    #: The registry's table in every store database (the config's ``table_name``).
    kv_table: str
    _templates: dict[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def for_session(
        cls,
        *,
        url: str | None,
        data_dir: Path,
        flavor: Flavor,
        templates: TemplateCache,
        run_id: str,
        worker: str | None,
        controller: bool,
        config: Path,
    ) -> PostgresStores | None:
        """The session's server (the one at ``url``, or a throwaway one on ``data_dir``, started
        or joined) and janitor; ``None`` in an xdist controller, which runs no test but checks
        a given server, so a bad URL stops the run at once. A worker's databases belong to
        the controller's life (its parent), so pruning spares them while the run lasts.
        Raises ``PostgresError`` / ``StackConfigError``."""
        if controller:
            if url:
                check_server(url)
            return None
        server = acquire(url, data_dir=data_dir)
        try:
            janitor = Janitor(
                server.url,
                run_id=run_id,
                owner_pid=os.getppid() if worker else os.getpid(),
                explain=server.explain,
            )
            janitor.prune()  # what runs that are gone left behind
            table = StackConfig.load(config).postgres_kv_table or kv_table(flavor)
        except BaseException:
            server.release()
            raise
        return cls(server, janitor, flavor, templates, worker or "main", table)

    def _database(self, name: str) -> StoreDatabase:
        password_file = ""
        if self.server.data_dir is not None:
            password_file = str(self.server.data_dir / "password")
        url = PostgresURL.parse(self.server.url).with_database(name)
        return StoreDatabase(url, self.kv_table, self.flavor, password_file)

    def _template(self, seeds: tuple[ToolgroupSeed, ...]) -> str:
        """The template database of ``seeds``: built once per run, whichever worker asks first."""
        fmt = self.templates.format
        key = seed_set_key(seeds)
        if key in self._templates:
            return self._templates[key]
        name = database_name("tmpl", self.janitor.run_id, key)
        self.templates.root.mkdir(mode=0o700, exist_ok=True)
        with FileLock(str(self.templates.root / f"{name}.lock")):
            if not self.janitor.exists(name):
                self.janitor.create(name, kind="template")
                write_kv_rows(
                    self._database(name).url,
                    self.kv_table,
                    seed_rows(seeds, fmt).items(),
                    flavor=self.flavor,
                )
                self.janitor.mark_template(name)
        self._templates[key] = name
        return name

    def attach(
        self,
        store: LlamaStore,
        seeds: tuple[ToolgroupSeed, ...],
        built: BuiltTemplate | None = None,
    ) -> LlamaStore:
        """``store`` on a new database of its own, holding ``seeds``: a copy of the seed
        template, or of a state template's database (its folder's path rewritten to the
        store's, the seeds written on top)."""
        name = self.janitor.new_name(self.worker)
        if built is None or not built.database:
            template = self._template(seeds) if seeds else None
            self.janitor.create(name, template=template, store=str(store.path))
            return store.with_database(self._database(name))
        self.janitor.create(name, template=built.database, store=str(store.path))
        database = self._database(name)
        store = store.with_database(database)
        refs = [(table, column) for db, table, column in built.references if db == IN_DATABASE]
        if refs:
            replace_text(database.url, refs, str(built.path), str(store.path))
        if seeds:
            store.write_registry(seed_rows(seeds, self.templates.format))
        return store

    def attach_state_template(self, store: LlamaStore) -> LlamaStore:
        """A state template's store on a database made anew, named by its folder: every
        worker (and, reused, every run) finds the one built. Kept while the folder is."""
        folder = hashlib.sha256(str(store.path).encode()).hexdigest()[:16]
        name = database_name("state", folder)
        self.janitor.drop(name)
        self.janitor.create(name, kind="state-template", store=str(store.path))
        return store.with_database(self._database(name))

    def seal_state_template(self, store: LlamaStore) -> list[tuple[str, str]]:
        """After the build: the columns that name the template's folder; the database
        becomes a template, with no session left on it (a copy needs none)."""
        assert store.database is not None
        references = text_columns_with(store.database.url, str(store.path))
        self.janitor.end_sessions(store.database.name)
        self.janitor.mark_template(store.database.name)
        return references

    def attach_persistent(self, store: LlamaStore, *, fresh: bool) -> tuple[LlamaStore, bool]:
        """A persistent store on its named database, made anew when ``fresh``; whether it
        was made now (and so needs its seeds)."""
        # Named by the store's folder too: two projects on one server may both have a "soak".
        folder = hashlib.sha256(str(store.path).encode()).hexdigest()[:8]
        name = database_name("persistent", store.label, folder)
        if fresh:
            self.janitor.drop(name)
        made = fresh or not self.janitor.exists(name)
        if made:
            self.janitor.create(name, kind="persistent", store=str(store.path))
        return store.with_database(self._database(name)), made

    def keep(self, store: LlamaStore) -> None:
        """``store`` is kept: its database lives as long as its folder, past this run.

        A server gone meanwhile is a warning, not an error of the test that is over: the
        database then goes with the next run, as a killed run's would.
        """
        if store.database is None:
            return
        try:
            self.janitor.keep(store.database.name)
        except PostgresError as exc:
            warnings.warn(
                f"kept store {store.path}: its database is not marked kept: {exc}",
                RuntimeWarning,
                stacklevel=2,
            )

    def drop(self, store: LlamaStore) -> None:
        if store.database is not None:
            self.janitor.drop(store.database.name)

    def drop_templates(self) -> None:
        """Drop this run's seed templates (the run's last process does, at its end)."""
        for info in self.janitor.databases():
            if info.kind == "template" and info.run == self.janitor.run_id:
                self.janitor.drop(info.name)

    def close(self) -> None:
        self.janitor.close()
        self.server.release()


@contextmanager
def reachable(store: LlamaStore) -> Iterator[LlamaStore]:
    """``store`` with its database within reach while the block runs.

    A throwaway server stops with the run that started it; to read a kept store later (the
    ``llamastate`` command), the server whose password file the store's marker names is
    started again, on a port of its own: the URL follows it. A given server is as it is.
    """
    db = store.database
    if db is None or not db.password_file:
        yield store
        return
    server = acquire(data_dir=Path(db.password_file).parent)
    try:
        url = PostgresURL.parse(server.url).with_database(db.name)
        yield replace(store, database=replace(db, url=url))
    finally:
        server.release()
