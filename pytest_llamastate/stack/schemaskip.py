"""The release's SQL store skipping the schema steps a fresh store's files already answer.

``sqlschema`` creates a fresh store's SQLite files from the schema the first start of the
(release, config) left; while a stack then starts on them, this makes its SQL store skip
the steps whose outcome that schema already is. Profiled on OGX 1.5, a forked server's
start ran ~580 SQLite operations through aiosqlite's thread without it (reflection
before each ``create_table`` / ``add_column_if_not_exists`` / ``create_index``, a
transaction each), 76 with it: ``Stack.initialize`` 167 -> 43 ms.

Used in the plugin's process while a library stack starts, and in a forked server's own
process until it listens (``zygote`` loads this file by path, the schema sent with the
fork request in :func:`wire` form): so standard library only.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

__all__ = ["Shape", "skipping", "unwire", "wire"]

_STORE_CLASS = "SqlAlchemySqlStoreImpl"
#: The schema steps of the store class that may be skipped (each release has some).
_STEPS = ("_add_column_now", "add_column_if_not_exists", "create_table", "create_index")


class Shape(Protocol):
    """What the skipping needs of one file's schema."""

    @property
    def columns(self) -> Mapping[str, Collection[str]]: ...

    @property
    def indexes(self) -> Collection[str]: ...


def wire(module: str, known: Mapping[str, Shape]) -> dict[str, Any]:
    """``known`` (schemas by resolved file path) and the store's module, as JSON values."""
    files = {
        path: {
            "columns": {table: sorted(names) for table, names in shape.columns.items()},
            "indexes": sorted(shape.indexes),
        }
        for path, shape in known.items()
    }
    return {"module": module, "files": files}


@dataclass(frozen=True)
class _Wired:
    columns: Mapping[str, Collection[str]]
    indexes: Collection[str]


def unwire(said: Mapping[str, Any]) -> tuple[str, dict[str, Shape]]:
    """What :func:`wire` said: the store's module and the schemas by file path."""
    files: dict[str, Shape] = {
        path: _Wired(shape["columns"], shape["indexes"]) for path, shape in said["files"].items()
    }
    return said["module"], files


@contextlib.contextmanager
def skipping(module: str, known: Mapping[str, Shape]) -> Iterator[None]:
    """The store class of ``module`` skips, for the files in ``known``, what they have.

    Each step is wrapped where the release's store has it: adding a column it has (the
    check and ``ALTER TABLE`` are ``_add_column_now`` from llama-stack 0.7 and OGX 1.5 on,
    ``add_column_if_not_exists`` before, which touches no metadata there); creating a
    table it has once the engine is up (0.7 / OGX: ``create_table`` creates at once then);
    an index it has (OGX). A store class the release does not have: nothing is wrapped.
    """
    try:
        store_class: Any = getattr(importlib.import_module(module), _STORE_CLASS)
    except ModuleNotFoundError:  # no SQLAlchemy (llama-stack 0.2): the files are enough
        yield
        return
    original = {name: getattr(store_class, name) for name in _STEPS if name in vars(store_class)}

    def schema_of(store: Any) -> Shape | None:
        path = getattr(store.config, "db_path", None)  # SQLite configs only
        return known.get(str(Path(path).resolve())) if path else None

    async def skip_known_column(store: Any, table: str, column: str, *args: Any) -> None:
        schema = schema_of(store)
        if schema is None or column not in schema.columns.get(table, ()):
            await original[column_step](store, table, column, *args)

    async def skip_known_table(store: Any, table: str, *args: Any) -> None:
        """Register the table; with the engine up, ``create_table`` would create it now,
        and it exists: so the engine is hidden while it registers (no await in between)."""
        schema = schema_of(store)
        if getattr(store, "_engine", None) is None or schema is None or table not in schema.columns:
            await original["create_table"](store, table, *args)
            return
        engine, store._engine = store._engine, None
        try:
            await original["create_table"](store, table, *args)
        finally:
            store._engine = engine

    async def skip_known_index(store: Any, name: str, table: str, *args: Any) -> None:
        """An index the file has: the engine is started as ``create_index`` would."""
        schema = schema_of(store)
        if schema is None or name not in schema.indexes:
            await original["create_index"](store, name, table, *args)
        else:
            await store._ensure_engine()

    column_step = "_add_column_now" if "_add_column_now" in original else "add_column_if_not_exists"
    steps: dict[str, Callable[..., Awaitable[None]]] = {column_step: skip_known_column}
    if "_ensure_engine" in vars(store_class):  # an engine kept by the store (0.7, OGX)
        steps["create_table"] = skip_known_table
    if "create_index" in original:
        steps["create_index"] = skip_known_index
    try:
        for name, step in steps.items():
            setattr(store_class, name, step)
        yield
    finally:
        for name in steps:
            setattr(store_class, name, original[name])
