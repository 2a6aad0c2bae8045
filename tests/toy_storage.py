"""A third storage backend, for tests only: the store's tables are SQLite files in a
``toy/`` subfolder that the stack finds through a variable of the backend's own
(``TOY_DIR``), with a default run config that points there.

It shows that a backend is one module and one line of ``storage.backends.BACKENDS`` (added
below, when this module is loaded, e.g. by ``-p toy_storage``): no layer above ``storage``
needs to know it exists. ``test_toy_storage`` runs the store tests on it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pytest_llamastate.releases import Flavor
from pytest_llamastate.storage.backends import BACKENDS
from pytest_llamastate.storage.sqlite_backend import SqliteStorage, SqliteTables

BACKENDS["toy"] = "toy_storage:ToyStorage"


@dataclass(frozen=True)
class ToyTables(SqliteTables):
    backend: ClassVar[str] = "toy"
    title: ClassVar[str] = "toy"

    @property
    def env(self) -> Mapping[str, str]:  # type: ignore[override]
        return {"TOY_DIR": str(self.folder)}

    def marker(self) -> dict[str, Any]:
        return {"storage": "toy"}


@dataclass
class ToyStorage(SqliteStorage):
    name: ClassVar[str] = "toy"
    label: ClassVar[str] = "toy"

    @classmethod
    def default_config(cls, flavor: Flavor) -> Path:
        """The flavor's offline config with the registry and SQL store under ``TOY_DIR``."""
        text = flavor.default_config.read_text(encoding="utf-8")
        for name in ("kvstore.db", "sql_store.db"):
            text = text.replace(f"${{env.SQLITE_STORE_DIR}}/{name}", f"${{env.TOY_DIR}}/{name}")
        path = Path(tempfile.gettempdir()) / f"llamastate-toy-{flavor.config_template}"
        path.write_text(text, encoding="utf-8")
        return path

    @classmethod
    def owns(cls, store_env: Mapping[str, str]) -> bool:
        return "TOY_DIR" in store_env

    @classmethod
    def reopen(cls, folder: Path, marker: Mapping[str, Any]) -> ToyTables | None:
        return ToyTables(folder / "toy") if marker.get("storage") == "toy" else None

    def tables_for(self, folder: Path) -> ToyTables:
        (folder / "toy").mkdir(exist_ok=True)
        return ToyTables(folder / "toy")
