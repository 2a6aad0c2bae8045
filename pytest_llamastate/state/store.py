"""A Llama Stack state folder and the environment that points a stack at it.

Llama Stack reads its state roots from environment variables once, when a stack loads its
config. So isolation means: one folder per scope, and every state root pointing into it
*before* a stack starts. This module knows nothing about pytest; the plugin, the stack
runner and the ``llamastate`` command all build on it.
"""

from __future__ import annotations

import errno
import json
import shutil
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..releases import FLAVORS
from ..storage.backends import reopen
from ..storage.base import Row, StoreTables
from ..storage.sqlite_backend import SqliteTables, kvstore_path
from . import environ
from .registry import REGISTRY_MARK, RegistryEntry, RegistrySnapshot, ToolgroupRecord, parse_entries
from .seeds import ToolgroupSeed

__all__ = [
    "MARKER_NAME",
    "LlamaStore",
    "NotAStoreError",
    "is_store",
    "os_problem",
    "read_json",
    "remove_store",
    "state_env",
]

#: Written into every folder the plugin creates; nothing without it is ever deleted.
MARKER_NAME = ".llamastate.json"


class NotAStoreError(ValueError):
    """Raised when a folder was not made by pytest-llamastate."""


def state_env(path: Path) -> dict[str, str]:
    """The variables that point every state root Llama Stack (and OGX) knows into ``path``.

    ``SQLITE_STORE_DIR`` alone is not isolation: the files API, Milvus Lite and the config
    folder have roots of their own. Both the Llama Stack and the OGX name of the config
    folder are set, so a suite isolates whichever of the two is installed, and the OGX CLI
    never moves a developer's real ``~/.llama`` (it does so only when ``OGX_CONFIG_DIR``
    is unset).
    """
    config_dir = str(path / "config")
    return {
        "SQLITE_STORE_DIR": str(path),
        "FILES_STORAGE_DIR": str(path / "files"),
        "MILVUS_DB_PATH": str(path / "milvus.db"),
        **{flavor.config_dir_var: config_dir for flavor in FLAVORS},
    }


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a file the plugin wrote; ``{}`` when missing or damaged."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def is_store(path: Path) -> bool:
    """Whether ``path`` is a folder made (and so removable) by pytest-llamastate."""
    return (path / MARKER_NAME).is_file()


def os_problem(exc: OSError, about: Path | None = None) -> str:
    """An OS error as one line naming the path and the cause: ``<path>: No space left on
    device (ENOSPC)``; the path is the one the error names (a copy's source and target:
    ``<from> -> <to>``), else the one it was ``about`` (a failed write names no file)."""
    code = errno.errorcode.get(exc.errno or 0, "")
    cause = (exc.strerror or str(exc)) + (f" ({code})" if code else "")
    where = exc.filename if exc.filename is not None else about
    if where is not None and exc.filename2 is not None:
        where = f"{where} -> {exc.filename2}"
    return f"{where}: {cause}" if where is not None else cause


def remove_store(path: Path, *, best_effort: bool = False) -> bool:
    """Delete ``path`` if, and only if, it is a store the plugin made; return whether it was.

    ``best_effort`` ignores files that cannot be removed (like pytest's own tmp_path
    clean-up); otherwise the error propagates, so a half-deleted store never passes
    for a deleted one.
    """
    if not is_store(path):
        return False
    shutil.rmtree(path, ignore_errors=best_effort)
    return True


@dataclass(frozen=True)
class LlamaStore:
    """One isolated state folder.

    ``env`` is what :meth:`activate` applies: pass it to a subprocess (``{**os.environ,
    **store.env}``) to point a ``llama stack run`` you start yourself at this store.
    """

    path: Path
    label: str = ""
    #: The toolgroups the store was created with.
    seeds: tuple[ToolgroupSeed, ...] = field(default=(), repr=False, compare=False)
    #: What the store is for: ``test`` (made for a test or a fixture), ``persistent``.
    kind: str = field(default="test", compare=False)
    #: Where the store's tables live (``None``: SQLite files in the folder), as the
    #: storage backend made them.
    tables: StoreTables = field(default=None, repr=False, compare=False)  # type: ignore[assignment]
    #: The state template the store started as a copy of (``""``: none).
    template: str = field(default="", compare=False)
    env: Mapping[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.tables is None:
            object.__setattr__(self, "tables", SqliteTables(self.path))
        object.__setattr__(self, "env", {**state_env(self.path), **self.tables.env})

    @property
    def database_url(self) -> str | None:
        """The URL of the store's database (``psql "<url>"``); ``None`` for SQLite files."""
        return self.tables.database_url

    @classmethod
    def create(cls, path: Path, *, label: str = "", kind: str = "test", **extra: Any) -> LlamaStore:
        """Make ``path`` (which must not exist yet) a new, marked store."""
        path.mkdir(mode=0o700)
        marker = {"kind": kind, "label": label, "created": time.time(), **extra}
        try:
            (path / MARKER_NAME).write_text(json.dumps(marker), encoding="utf-8")
        except BaseException as exc:  # a disk full now: no unmarked folder left behind
            (path / MARKER_NAME).unlink(missing_ok=True)
            path.rmdir()
            if isinstance(exc, OSError) and exc.filename is None:
                exc.filename = str(path / MARKER_NAME)  # a write error names no file
            raise
        return cls(path, label, kind=kind)

    def on(self, tables: StoreTables, **changes: Any) -> LlamaStore:
        """This store with its tables where the storage backend made them (and ``changes``
        to its other fields); the marker records where, when that is outside the folder
        (never a password)."""
        if fields := tables.marker():
            marker = {**self.read_marker(self.path), **fields}
            (self.path / MARKER_NAME).write_text(json.dumps(marker), encoding="utf-8")
        if tables == self.tables and not changes:
            return self
        return replace(self, tables=tables, **changes)

    @classmethod
    def open(cls, path: Path) -> LlamaStore:
        """Open an existing store, refusing folders the plugin did not make."""
        if not is_store(path):
            raise NotAStoreError(f"{path} is not a pytest-llamastate store (no {MARKER_NAME})")
        marker = cls.read_marker(path)
        return cls(
            path,
            str(marker.get("label", "")),
            kind=str(marker.get("kind", "test")),
            tables=reopen(path, marker),
            template=str(marker.get("template", "")),
        )

    @staticmethod
    def read_marker(path: Path) -> dict[str, Any]:
        return read_json(path / MARKER_NAME)

    @property
    def kvstore_path(self) -> Path:
        """The registry's SQLite file (toolgroups, models, vector stores, ...): ``kvstore.db``,
        or a llama-stack 0.2 distribution's ``registry.db`` when only that one is there."""
        return kvstore_path(self.path)

    @property
    def sqlstore_path(self) -> Path:
        """The SQL store (conversations, responses, files metadata, ...)."""
        return self.path / "sql_store.db"

    @property
    def config_path(self) -> Path:
        """The run config a stack on this store started with (kept with its state)."""
        return self.path / "stack.yaml"

    @property
    def log_path(self) -> Path:
        """Where a server on this store writes its stdout and stderr."""
        return self.path / "server.log"

    @contextmanager
    def activate(self) -> Iterator[LlamaStore]:
        """Point the process environment at this store until the block ends.

        Restores each variable exactly as it was before, even one the block changed or
        deleted: a variable that was unset is unset again. Activations nest (a test's store
        inside a session store) and unwind in order.
        """
        with environ.patched(self.env):
            yield self

    # -- reading the store without a stack ------------------------------------------------

    def entries(self) -> list[RegistryEntry]:
        """Every registry row, sorted by key, wherever the store's tables are."""
        return parse_entries(self.tables.kv_rows(REGISTRY_MARK))

    def toolgroups(self) -> list[ToolgroupRecord]:
        """The toolgroups registered in this store, read straight from its registry."""
        return [ToolgroupRecord.from_entry(e) for e in self.entries() if e.type == "tool_group"]

    def keys(self, prefix: str = "") -> list[str]:
        """Every key of the registry's table starting with ``prefix``, sorted."""
        return self.tables.keys(prefix)

    def snapshot(self) -> RegistrySnapshot:
        """The registry as it is now; ``later.diff(earlier)`` tells what changed."""
        return RegistrySnapshot({e.key: e for e in self.entries()})

    def table_rows(self) -> dict[str, frozenset[Row]]:
        """Every row of every table of the store: what a shared store's leak report
        compares. Registry rows are included; :attr:`registry_table` names their table."""
        return self.tables.table_rows()

    @property
    def registry_table(self) -> str:
        """The key of the registry's table in :meth:`table_rows`."""
        return self.tables.registry_table

    def integrity_problems(self) -> list[str]:
        """One line per reason a stack could not use the store's tables again."""
        return self.tables.integrity_problems()

    def write_registry(self, rows: Mapping[str, str | None]) -> None:
        """Insert, replace (JSON text) or delete (``None``) registry rows in one transaction."""
        self.tables.write_registry(rows)
