"""Templates: state built once, copied into every store that starts from it.

Two kinds share the copy-per-test idea. Seed templates (``TemplateCache``) hold toolgroup
rows, written without a stack. State templates (``BuiltTemplate``; built by a builder on
a real stack, see ``statetemplates``) hold whatever the stack's API wrote: registry rows,
SQL tables, uploaded files. Their copy must be an independent store, so every reference
to the template's own folder that a provider wrote (llama-stack's ``inline::localfs``
keeps each file's absolute ``file_path``, and refuses one outside its ``storage_dir``) is
found once when the template is sealed and rewritten in each copy.

Llama Stack 0.7 has no API that registers a toolgroup ahead of a stack (the routes were
removed, and ``tool_groups:`` in a run config is emptied by a validator), so seeds become
registry rows, written the way the installed stack writes them; the storage backend
copies each distinct seed set from a template of its own (``storage``).
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import tempfile
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from ..releases import Flavor, detect
from ..storage.base import SeedRows, StateCopy
from ..storage.sqlite import checkpoint, connect, is_sqlite, quoted, table_names
from . import live
from .registry import RegistryFormat, installed_format
from .seeds import SeedError, ToolgroupSeed, seed_set_key
from .stackconfig import StackConfig
from .store import MARKER_NAME, LlamaStore

__all__ = [
    "IN_DATABASE",
    "STATE_CACHE_SUBDIR",
    "BuiltTemplate",
    "Reference",
    "TemplateCache",
    "TemplateSealError",
    "seal",
    "seed_rows",
]

#: Where ``--llama-reuse-templates`` keeps built state templates in pytest's cache folder
#: (under ``d/``, so ``--cache-clear`` removes them).
STATE_CACHE_SUBDIR = Path("d") / "llamastate-templates"

#: A text column that holds the template's folder: (database file name, table, column).
Reference = tuple[str, str, str]
#: The "file name" of a reference in the tables a storage backend keeps outside the folder.
IN_DATABASE = "<database>"


class TemplateSealError(RuntimeError):
    """A built template refers to its own folder where a copy cannot rewrite it."""


def _not_state(store: LlamaStore) -> frozenset[str]:
    """Files of a store that are about it, not its state: never copied from a template."""
    return frozenset({MARKER_NAME, store.log_path.name, store.config_path.name})


def seal(folder: Path) -> tuple[Reference, ...]:
    """Make a built store a template: self-contained databases, references found.

    Each database is checkpointed out of WAL mode and vacuumed (no free page keeps an old
    value), the builder's server log is removed, and every text column holding ``folder``
    is returned. A reference anywhere else (a file that is not a database) cannot be
    rewritten per copy, so it is refused, naming the file.
    """
    store = LlamaStore(folder)
    store.log_path.unlink(missing_ok=True)
    needle = str(folder)
    references: list[Reference] = []
    unrewritable: list[str] = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.name in _not_state(store):
            continue
        if path.parent == folder and is_sqlite(path):
            checkpoint(path, journal_delete=True)
            with connect(path, readonly=False) as conn:
                conn.execute("VACUUM")
                references += [(path.name, t, c) for t, c in _columns_with(conn, needle)]
        elif needle.encode() in path.read_bytes():
            unrewritable.append(str(path.relative_to(folder)))
    if unrewritable:
        raise TemplateSealError(
            f"{folder}: the stack wrote the template's own path into "
            f"{', '.join(unrewritable)}; a copy would still read the template. Configure "
            "the provider to keep paths relative, or keep that state out of the template"
        )
    return tuple(references)


def _columns_with(conn: sqlite3.Connection, needle: str) -> list[tuple[str, str]]:
    found = []
    for table in table_names(conn):
        for row in conn.execute(f"PRAGMA table_info({quoted(table)})").fetchall():
            column = str(row[1])
            hit = conn.execute(
                f"SELECT 1 FROM {quoted(table)} WHERE instr(CAST({quoted(column)} AS TEXT), ?) "
                "> 0 LIMIT 1",
                (needle,),
            ).fetchone()
            if hit:
                found.append((table, column))
    return found


@dataclass(frozen=True)
class BuiltTemplate:
    """A sealed state template on disk, and how to copy it into a store."""

    name: str
    path: Path
    fingerprint: str
    references: tuple[Reference, ...] = ()
    #: Its marker: where the storage backend keeps its tables outside the folder.
    marker: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_marker(cls, path: Path, marker: Mapping[str, Any]) -> BuiltTemplate:
        refs = marker.get("references")
        return cls(
            str(marker.get("label", "")),
            path,
            str(marker.get("fingerprint_id", "")),
            tuple((str(d), str(t), str(c)) for d, t, c in refs) if isinstance(refs, list) else (),
            marker,
        )

    def state_copy(self) -> StateCopy:
        """What the storage backend copies: the tables outside the folder (the folder's
        files are copied by :meth:`copy_into`)."""
        outside = [(table, column) for db, table, column in self.references if db == IN_DATABASE]
        return StateCopy(self.path, self.marker, outside)

    @cached_property
    def _layout(self) -> tuple[list[str], list[str]]:
        """The template's state folders and files (relative), listed once: it never changes."""
        skip = _not_state(LlamaStore(self.path))
        folders, files = [], []
        for folder, dirnames, filenames in os.walk(self.path):
            rel = os.path.relpath(folder, self.path)
            prefix = "" if rel == "." else rel + os.sep
            folders += [prefix + d for d in dirnames]
            files += [prefix + f for f in filenames if prefix or f not in skip]
        return folders, files

    def copy_into(self, store: LlamaStore) -> None:
        """Copy every state file into ``store`` (fresh: only its marker), then point each
        reference at the copy, with freed bytes zeroed so no trace of the template stays."""
        folders, files = self._layout
        for rel in folders:
            os.mkdir(store.path / rel)
        for rel in files:
            shutil.copyfile(self.path / rel, store.path / rel)
        by_db: dict[str, list[tuple[str, str]]] = {}
        for db, table, column in self.references:
            if db != IN_DATABASE:  # the backend rewrites those (``state_copy``)
                by_db.setdefault(db, []).append((table, column))
        old, new = str(self.path), str(store.path)
        for db, columns in by_db.items():
            with connect(store.path / db, readonly=False) as conn, conn:
                # A fresh copy: a crash loses nothing worth a journal or an fsync.
                conn.executescript(
                    "PRAGMA secure_delete = ON; PRAGMA journal_mode = MEMORY; "
                    "PRAGMA synchronous = OFF;"
                )
                for table, column in columns:
                    col = quoted(column)
                    conn.execute(
                        f"UPDATE {quoted(table)} SET {col} = replace({col}, ?, ?) "
                        f"WHERE instr({col}, ?) > 0",
                        (old, new, old),
                    )


def seed_rows(seeds: Iterable[ToolgroupSeed], fmt: RegistryFormat) -> dict[str, str]:
    """The registry rows that hold ``seeds``, keyed and shaped as ``fmt`` says."""
    return dict(
        fmt.toolgroup_row(s.toolgroup_id, str(s.provider_id), s.mcp_endpoint, s.args) for s in seeds
    )


@dataclass
class TemplateCache:
    """Seed rows in the installed stack's format, and the run's folder for templates.

    ``root`` is chosen by the controller and handed to the workers (the storage backend
    builds one template of each seed set there, the state templates live under it); it is
    created on first use, so runs without seeds touch nothing. Rows are written in the
    format of ``flavor`` (default: detected) for the metadata namespace of ``config`` (OGX
    only reads keys under it); the config is read when the first rows are made.
    """

    root: Path
    flavor: Flavor | None = None
    config: Path | None = None
    #: Whether the storage backend's kv tables prefix keys in every flavor.
    prefixed: bool = False
    _format: RegistryFormat | None = field(default=None, repr=False)

    @classmethod
    def new_root(cls) -> Path:
        return Path(tempfile.gettempdir()) / f"pytest-llamastate-templates-{uuid.uuid4().hex[:12]}"

    @property
    def format(self) -> RegistryFormat:
        """How seed rows are written: the installed stack's format, with the namespace."""
        if self._format is None:
            flavor = self.flavor or detect()
            namespace = None
            if self.config is not None and (flavor.namespaced_keys or self.prefixed):
                namespace = StackConfig.load(self.config).metadata_namespace
            try:
                self._format = installed_format(flavor, namespace, prefixed=self.prefixed)
            except ModuleNotFoundError as exc:
                raise SeedError(f"seeds need a stack to take their format from: {exc}") from None
        return self._format

    def rows(self, seeds: tuple[ToolgroupSeed, ...]) -> SeedRows | None:
        """The rows of ``seeds``, keyed by everything that shapes them (so workers never
        share a wrong template); ``None`` for no seeds."""
        if not seeds:
            return None
        fmt = self.format
        shape = re.sub(r"\W", "_", f"{fmt.core}-{fmt.version}-{fmt.namespace or ''}")
        return SeedRows(f"{shape}-{seed_set_key(seeds)}", seed_rows(seeds, fmt))

    def apply(self, seeds: tuple[ToolgroupSeed, ...], store: LlamaStore) -> None:
        """Write ``seeds``'s rows into a store that exists already.

        Refused while a stack runs on the store: its registry caches what it read, so
        rows written under it would not be seen (or would be overwritten).
        """
        if not seeds:
            return
        if (stack := live.on(store.path)) is not None:
            raise SeedError(
                f"{store.path}: a stack is running on this store "
                f"({stack.label or 'no label'}); seed it before the stack starts"
            )
        store.write_registry(seed_rows(seeds, self.format))

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
