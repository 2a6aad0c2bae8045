"""A store's own database: the tables of a store on Postgres (``StoreTables``).

Its marker records where the database is (never the password), so the command line and a
later run find it again; a throwaway server that stopped with its run is started again
to read it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

from ...releases import LLAMA_STACK, Flavor, by_name
from ..base import Row, StoreTables
from . import tables
from .client import PostgresURL, kv_table, read_kv_rows, write_kv_rows
from .janitor import Janitor
from .server import acquire

__all__ = ["StoreDatabase"]


@dataclass(frozen=True)
class StoreDatabase:
    """A store's own database: where its registry and SQL tables live on Postgres.

    ``url`` names the database and carries the password (never written to disk: the
    store's marker records :meth:`describe`, which leaves it out).
    """

    url: PostgresURL
    kv_table: str
    flavor: Flavor = LLAMA_STACK
    #: Where the password can be read back (a throwaway server's), for the command line.
    password_file: str = ""
    backend: ClassVar[str] = "postgres"
    #: ``kv_postgres`` prefixes keys with the metadata namespace in every flavor.
    prefixes_keys: ClassVar[bool] = True
    sqlite_folder: ClassVar[Path | None] = None

    @property
    def name(self) -> str:
        return self.url.database

    @property
    def env(self) -> Mapping[str, str]:
        """``POSTGRES_HOST`` ... ``POSTGRES_PASSWORD``: what Postgres run configs read."""
        return self.url.env()

    @property
    def database_url(self) -> str:
        return str(self.url)

    @property
    def location(self) -> str:
        return self.url.masked

    @property
    def title(self) -> str:
        return f"database {self.name}"

    @property
    def psql(self) -> str:
        """A ready ``psql`` command. The password is in it only for a throwaway server
        (a local secret in a 0600 file); a given server's stays out of logs."""
        url = self.url if self.password_file else replace(self.url, password="")
        return f'psql "{url}"'

    @property
    def open_hint(self) -> str:
        return self.psql

    @property
    def registry_table(self) -> str:
        """As :meth:`table_rows` names it: the stacks fold the unquoted name to lowercase."""
        return self.kv_table.lower()

    def rows(self) -> list[tuple[str, str]]:
        return read_kv_rows(self.url, self.kv_table)

    def kv_rows(self, contains: str = "") -> list[tuple[str, str]]:
        return [(key, value) for key, value in self.rows() if contains in key]

    def keys(self, prefix: str = "") -> list[str]:
        return [key for key, _ in self.rows() if key.startswith(prefix)]

    def write_registry(self, rows: Mapping[str, str | None]) -> None:
        """Insert, replace (JSON text) or delete (``None``) registry rows, in one transaction."""
        write_kv_rows(
            self.url,
            self.kv_table,
            [(k, v) for k, v in rows.items() if v is not None],
            flavor=self.flavor,
            delete=[k for k, v in rows.items() if v is None],
        )

    def table_rows(self) -> dict[str, frozenset[Row]]:
        return tables.table_rows(self.url)

    def table_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        return tables.table_counts(self.url)

    def integrity_problems(self) -> list[str]:
        return tables.integrity_problems(self.url)

    def describe(self) -> dict[str, str]:
        """What a store's marker records: enough to reach the rows again, no password."""
        return {
            "url": self.url.masked,
            "database": self.name,
            "kv_table": self.kv_table,
            "flavor": self.flavor.name,
            "password_file": self.password_file,
        }

    def marker(self) -> dict[str, Any]:
        return {"database": self.describe()}

    @classmethod
    def from_marker(cls, data: Mapping[str, Any]) -> StoreDatabase:
        """Back from :meth:`describe`; the password from its file or ``PGPASSWORD``."""
        password = os.environ.get("PGPASSWORD", "")
        if (path := str(data.get("password_file") or "")) and os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                password = f.read().strip()
        url = PostgresURL.parse(str(data.get("url", "")).replace(":***@", "@"))
        flavor = by_name(str(data.get("flavor", LLAMA_STACK.name)))
        return cls(
            replace(url, password=password, database=str(data.get("database", url.database))),
            str(data.get("kv_table", kv_table(flavor))),
            flavor,
            path,
        )

    @contextmanager
    def reachable(self) -> Iterator[StoreTables]:
        """A throwaway server stops with the run that started it; to read a kept store later
        (the ``llamastate`` command), the server whose password file the marker names is
        started again, on a port of its own: the URL follows it. A given server is as it is."""
        if not self.password_file:
            yield self
            return
        server = acquire(data_dir=Path(self.password_file).parent)
        try:
            url = PostgresURL.parse(server.url).with_database(self.name)
            yield replace(self, url=url)
        finally:
            server.release()

    def drop(self) -> list[str]:
        admin = Janitor(self.url.with_database("postgres"), run_id="llamastate-reset")
        try:
            return [f"dropped database {self.name}"] if admin.drop(self.name) else []
        finally:
            admin.close()
