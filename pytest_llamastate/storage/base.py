"""The storage protocol: what a place for a store's tables must do, whichever it is.

A store's folder always holds its marker, run config, logs and uploaded files; where the
stack's tables (registry, SQL store) live is a storage backend's business: SQLite files in
the folder (``sqlite``), a database per store on a server (``postgres``), or anything else
that can be made per store, copied from a template and dropped. The layers above ask a
store's :class:`StoreTables` and the session's :class:`Storage`, never which backend it
is; ``backends`` is the one table that chooses a backend by name.

Words: *seed rows* are the registry rows of a test's toolgroup seeds (``SeedRows``); a
*state template* is a store a builder made on a real stack, copied per test
(``StateCopy``); a *template database* is how a database backend copies either.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from ..releases import Flavor

__all__ = [
    "ConfigBlock",
    "Row",
    "SeedRows",
    "SessionSpec",
    "StateCopy",
    "Storage",
    "StorageConfigError",
    "StorageError",
    "StoreTables",
]

#: One table row, as the driver returns it.
Row = tuple[Any, ...]


class StorageError(ValueError):
    """Storage cannot be reached or used; one line naming where (no password) and the fix."""


class StorageConfigError(StorageError):
    """A run config's storage block that would break isolation; the message says the fix."""


class StoreTables(Protocol):
    """Where one store's tables live, and what the layers above read and write there."""

    #: The backend's name in the table (``sqlite``, ``postgres``).
    backend: ClassVar[str]
    #: Whether the stack's kv table prefixes every key with the metadata namespace.
    prefixes_keys: ClassVar[bool]

    @property
    def env(self) -> Mapping[str, str]:
        """What a stack needs to reach the tables, beyond the store's state roots."""
        ...

    @property
    def database_url(self) -> str | None:
        """The URL a client opens (password included); ``None`` for files in the folder."""
        ...

    @property
    def sqlite_folder(self) -> Path | None:
        """The folder whose SQLite files are the tables (``None``: not SQLite files), for
        what works on such files only (the schema shortcut)."""
        ...

    @property
    def title(self) -> str:
        """How ``llamastate show`` heads the tables: ``SQLite``, ``database <name>``."""
        ...

    @property
    def location(self) -> str:
        """Where the tables are, for messages (no password): ``""`` for the folder."""
        ...

    @property
    def open_hint(self) -> str:
        """The command that opens the tables (``psql "<url>"``); ``""``: the folder says it."""
        ...

    @property
    def registry_table(self) -> str:
        """The key of the registry's table in :meth:`table_rows`."""
        ...

    def kv_rows(self, contains: str = "") -> list[tuple[str, str]]:
        """Every unexpired ``(key, value)`` of the registry's kv table whose key contains
        ``contains``, sorted by key; none when no stack or seed ever wrote there."""
        ...

    def keys(self, prefix: str = "") -> list[str]:
        """Every key of the registry's kv table starting with ``prefix``, sorted."""
        ...

    def write_registry(self, rows: Mapping[str, str | None]) -> None:
        """Insert, replace (JSON text) or delete (``None``) registry rows, one transaction."""
        ...

    def table_rows(self) -> dict[str, frozenset[Row]]:
        """Every row of every table by table, registry included (the shared-store leak
        report compares them)."""
        ...

    def table_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """Rows per kv namespace (a key's first ``:`` segment) over every kv table, and rows
        per other table (``llamastate show``)."""
        ...

    def integrity_problems(self) -> list[str]:
        """One line per reason a stack could not use the tables again."""
        ...

    def marker(self) -> dict[str, Any]:
        """What the store's marker records to find the tables again (no secret); ``{}``:
        nothing beyond the folder."""
        ...

    def reachable(self) -> AbstractContextManager[StoreTables]:
        """These tables within reach while the block runs, after the run that made them."""
        ...

    def drop(self) -> list[str]:
        """Remove what lives outside the folder (the command line's ``reset``); a line for
        each thing removed."""
        ...


@dataclass(frozen=True)
class SeedRows:
    """The registry rows of one seed set; ``key`` names the set and everything that shaped
    the rows, so two processes with equal keys may share one template of them."""

    key: str
    rows: Mapping[str, str]


@dataclass(frozen=True)
class StateCopy:
    """A sealed state template a store starts as a copy of: its folder (whose files are
    already copied into the store's), its marker (where the template's tables outside the
    folder are), and the (table, column) pairs there that name the template's folder."""

    folder: Path
    marker: Mapping[str, Any]
    references: Sequence[tuple[str, str]]


@dataclass(frozen=True)
class SessionSpec:
    """What a backend needs to serve one pytest process's stores."""

    flavor: Flavor
    #: Shared by every xdist worker of the run.
    run_id: str
    #: The xdist worker id (``None``: no workers).
    worker: str | None
    #: An xdist controller: runs no test, so only checks what it was given.
    controller: bool
    #: The run's folder for seed templates, shared by its xdist workers.
    templates: Path
    #: Where a backend may keep what outlives the run (a throwaway server's data).
    data_dir: Path
    #: The run config's data, read on demand (a backend may read its table name there).
    config: Callable[[], Mapping[str, Any]]
    #: The server a database backend uses (``None``: one it starts itself).
    url: str | None = None


@dataclass(frozen=True)
class ConfigBlock:
    """One ``storage.backends`` block of a run config, for a backend's check."""

    #: ``<config file>: storage.backends.<name>``, for messages.
    where: str
    kind: str
    block: Mapping[str, Any]
    #: ``${env.VAR}`` references resolved as the stack resolves them (``KeyError``: unset).
    resolve: Callable[[str], str]
    #: What points a stack at the test's store (``LlamaStore.env``).
    store_env: Mapping[str, str]


class Storage(Protocol):
    """One pytest process's storage backend: makes, copies, keeps and drops its stores'
    tables. The class methods work without a session (config checks, reopening)."""

    name: ClassVar[str]
    #: The name in messages (``SQLite``).
    label: ClassVar[str]
    #: Its tables' ``StoreTables.prefixes_keys``: seed rows are keyed the same way.
    prefixes_keys: ClassVar[bool]
    #: The ``storage.backends`` types of a run config this backend serves.
    config_types: ClassVar[tuple[str, ...]]

    @classmethod
    def for_session(cls, spec: SessionSpec) -> Storage:
        """This process's storage. Raises ``StorageError``."""
        ...

    @classmethod
    def default_config(cls, flavor: Flavor) -> Path:
        """The plugin's offline run config of ``flavor`` with its state on this backend."""
        ...

    @classmethod
    def probe_env(cls) -> dict[str, str]:
        """What a store's variables look like, to check a config before any store exists."""
        ...

    @classmethod
    def owns(cls, store_env: Mapping[str, str]) -> bool:
        """Whether a store with this environment keeps its tables on this backend."""
        ...

    @classmethod
    def check_block(cls, block: ConfigBlock) -> None:
        """Refuse a block of one of :attr:`config_types` that is not the store's own."""
        ...

    @classmethod
    def reopen(cls, folder: Path, marker: Mapping[str, Any]) -> StoreTables | None:
        """The tables a store's marker names, if this backend's; else ``None``."""
        ...

    def create(self, folder: Path, seeds: SeedRows | None, copy: StateCopy | None) -> StoreTables:
        """The tables of a new store in ``folder``: a copy of ``copy`` (its files are in the
        folder already), then ``seeds``'s rows."""
        ...

    def persistent(
        self, folder: Path, name: str, *, fresh: bool, seeds: SeedRows | None
    ) -> tuple[StoreTables, bool]:
        """The tables of persistent store ``name``, made anew (with ``seeds``) when ``fresh``
        or missing; whether they were made now."""
        ...

    def for_state_template(self, folder: Path, seeds: SeedRows | None) -> StoreTables:
        """Tables made anew, holding ``seeds``, for a state template built in ``folder``."""
        ...

    def seal(self, tables: StoreTables, folder: Path) -> list[tuple[str, str]]:
        """A built state template's tables made copyable; the (table, column) pairs outside
        the folder that name ``folder`` (a copy rewrites them)."""
        ...

    def keep(self, tables: StoreTables) -> None:
        """The store is kept: its tables outlive the run, as long as its folder."""
        ...

    def drop(self, tables: StoreTables) -> None:
        """The store is released: remove its tables outside the folder."""
        ...

    def header(self) -> list[str]:
        """What the run's header says about where stores' tables are."""
        ...

    def close(self, *, last: bool) -> None:
        """The session is over; ``last``: no other process of the run needs its seed
        templates. Raises ``StorageError`` after letting go of what it holds."""
        ...
