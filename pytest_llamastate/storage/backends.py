"""The table of storage backends: ``--llama-backend`` names one, this module finds it.

One line per backend, the name and where its class is; the class is imported on first
use, so a backend costs nothing until a run chooses it. Everything else that differs by
backend is a method of the class (``base.Storage``), so a new backend is a module and a
line here.
"""

from __future__ import annotations

import pkgutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

from .base import ConfigBlock, Storage, StorageConfigError, StoreTables

__all__ = ["BACKENDS", "DEFAULT", "backend", "check_block", "reopen"]

#: Every storage backend by name: ``module:Class`` implementing ``base.Storage``.
BACKENDS: dict[str, str] = {
    "sqlite": "pytest_llamastate.storage.sqlite_backend:SqliteStorage",
    "postgres": "pytest_llamastate.storage.postgres.backend:PostgresStorage",
}
#: Stores' tables are SQLite files in their folders unless a run chooses otherwise.
DEFAULT = "sqlite"
#: Run config storage types whose state no backend can give each store of its own.
_SHARED = ("kv_redis", "kv_mongodb")


def backend(name: str) -> type[Storage]:
    """The class of backend ``name`` (one of :data:`BACKENDS`)."""
    return cast("type[Storage]", pkgutil.resolve_name(BACKENDS[name]))


def _all() -> list[type[Storage]]:
    return [backend(name) for name in BACKENDS]


def reopen(folder: Path, marker: Mapping[str, Any]) -> StoreTables:
    """The tables of the store in ``folder``, as its marker records them."""
    for cls in _all():
        if cls.name != DEFAULT and (tables := cls.reopen(folder, marker)) is not None:
            return tables
    return cast("StoreTables", backend(DEFAULT).reopen(folder, marker))


def check_block(
    where: str,
    block: Mapping[str, Any],
    resolve: Callable[[str], str],
    store_env: Mapping[str, str],
) -> bool:
    """Refuse a run config's ``storage.backends`` block that is not the store's own;
    whether it is one a backend serves (and so is where the store's state goes).

    Raises ``StorageConfigError`` naming the block and the fix.
    """
    kind = str(block.get("type", ""))
    if kind in _SHARED:
        served = ", ".join(
            f"{t} with --llama-backend={c.name}" for c in _all() for t in c.config_types[:1]
        )
        raise StorageConfigError(
            f"{where} is {kind}, which pytest-llamastate does not isolate (every test "
            f"would share its state); use kv_sqlite, or {served}"
        )
    for cls in _all():
        if kind not in cls.config_types:
            continue
        if not cls.owns(store_env):
            on = next((c for c in _all() if c.config_types and c.owns(store_env)), backend(DEFAULT))
            raise StorageConfigError(
                f"{where} is {kind}, but the test's store is on {on.label}, so tests would "
                f"share that database: run with --llama-backend={cls.name} (or use "
                "kv_sqlite/sql_sqlite)"
            )
        cls.check_block(ConfigBlock(where, kind, block, resolve, store_env))
        return True
    return False
