"""A SQL store skipping the schema steps its fresh store's files already answer
(``stack/schemaskip.py``), on a store class shaped as the releases' are.

That the real stores start on such files with nothing missing is the isolation suite's
to show (library stacks in ``compat/test_shortcuts.py``, forked servers in
``test_readymade.py``); here, which step is skipped and that the class is left as it was.
"""

from __future__ import annotations

import asyncio
import json
import sys
import types
from pathlib import Path

import pytest

from pytest_llamastate.stack import schemaskip


class _Config:
    def __init__(self, db_path: Path) -> None:
        self.db_path = str(db_path)


class _Store:
    """A store as llama-stack 0.7's and OGX's: an engine it starts itself; every step
    says it ran."""

    def __init__(self, db_path: Path, engine: object = None) -> None:
        self.config, self._engine, self.ran = _Config(db_path), engine, []

    async def _ensure_engine(self) -> None:
        self.ran.append("engine")
        self._engine = self._engine or object()

    async def create_table(self, table: str, schema: object) -> None:
        self.ran.append(("table", table, self._engine is not None))

    async def _add_column_now(self, table: str, column: str, kind: object) -> None:
        self.ran.append(("column", table, column))

    async def create_index(self, name: str, table: str, columns: object) -> None:
        self.ran.append(("index", name))


@pytest.fixture
def module(monkeypatch: pytest.MonkeyPatch) -> str:
    store_module = types.ModuleType("fakestore.sqlalchemy_sqlstore")
    store_module.SqlAlchemySqlStoreImpl = _Store  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, store_module.__name__, store_module)
    return store_module.__name__


class _Shape:
    def __init__(self, columns: dict[str, list[str]], indexes: list[str]) -> None:
        self.columns, self.indexes = columns, indexes


def _known(db: Path) -> dict[str, schemaskip.Shape]:
    said = {"t": ["id", "x"]}
    wired = schemaskip.wire("m", {str(db.resolve()): _Shape(said, ["t_x"])})
    name, known = schemaskip.unwire(json.loads(json.dumps(wired)))  # as the request says
    assert name == "m"
    return known


async def _start(store: _Store) -> None:
    await store.create_table("t", {})
    await store.create_table("new", {})
    await store._add_column_now("t", "x", None)
    await store._add_column_now("t", "y", None)
    await store.create_index("t_x", "t", ["x"])
    await store.create_index("t_y", "t", ["y"])


def test_what_the_files_have_is_skipped_and_the_rest_runs(module: str, tmp_path: Path) -> None:
    db = tmp_path / "sql.db"
    store = _Store(db, engine="up")
    with schemaskip.skipping(module, _known(db)):
        asyncio.run(_start(store))
    assert store.ran == [
        ("table", "t", False),  # registered with the engine hidden: not created again
        ("table", "new", True),
        ("column", "t", "y"),
        "engine",  # instead of the index the file has
        ("index", "t_y"),
    ]
    assert store._engine == "up"
    assert vars(_Store)["create_table"].__qualname__ == "_Store.create_table"  # as it was


def test_a_store_of_another_file_runs_every_step(module: str, tmp_path: Path) -> None:
    store = _Store(tmp_path / "other.db", engine="up")
    with schemaskip.skipping(module, _known(tmp_path / "sql.db")):
        asyncio.run(_start(store))
    assert len(store.ran) == 6
    assert "engine" not in store.ran


def test_a_release_without_the_store_module_skips_nothing(tmp_path: Path) -> None:
    with schemaskip.skipping("no_such_module.sqlstore", _known(tmp_path / "sql.db")):
        pass
