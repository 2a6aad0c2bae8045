"""LlamaStore on its own: the environment it applies and restores, and its marker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pytest_llamastate import LlamaStore, NotAStoreError


def test_env_points_every_state_root_into_the_store(tmp_path: Path) -> None:
    store = LlamaStore.create(tmp_path / "s")
    assert store.env == {
        "SQLITE_STORE_DIR": str(store.path),
        "FILES_STORAGE_DIR": str(store.path / "files"),
        "MILVUS_DB_PATH": str(store.path / "milvus.db"),
        "LLAMA_STACK_CONFIG_DIR": str(store.path / "config"),
        "OGX_CONFIG_DIR": str(store.path / "config"),
    }
    assert store.kvstore_path == store.path / "kvstore.db"
    assert store.sqlstore_path == store.path / "sql_store.db"


def test_activate_restores_set_unset_and_changed_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SQLITE_STORE_DIR", "/before")
    monkeypatch.delenv("FILES_STORAGE_DIR", raising=False)
    monkeypatch.setenv("MILVUS_DB_PATH", "/milvus-before")
    store = LlamaStore.create(tmp_path / "s")
    with store.activate():
        assert os.environ["SQLITE_STORE_DIR"] == str(store.path)
        os.environ["SQLITE_STORE_DIR"] = "/changed-by-test"
        del os.environ["MILVUS_DB_PATH"]
    assert os.environ["SQLITE_STORE_DIR"] == "/before"
    assert "FILES_STORAGE_DIR" not in os.environ
    assert os.environ["MILVUS_DB_PATH"] == "/milvus-before"


def test_activations_nest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SQLITE_STORE_DIR", raising=False)
    outer = LlamaStore.create(tmp_path / "outer")
    inner = LlamaStore.create(tmp_path / "inner")
    with outer.activate():
        with inner.activate():
            assert os.environ["SQLITE_STORE_DIR"] == str(inner.path)
        assert os.environ["SQLITE_STORE_DIR"] == str(outer.path)
    assert "SQLITE_STORE_DIR" not in os.environ


def test_activate_restores_after_an_exception(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SQLITE_STORE_DIR", raising=False)
    store = LlamaStore.create(tmp_path / "s")
    with pytest.raises(KeyboardInterrupt), store.activate():
        raise KeyboardInterrupt
    assert "SQLITE_STORE_DIR" not in os.environ


def test_open_refuses_a_folder_the_plugin_did_not_make(tmp_path: Path) -> None:
    with pytest.raises(NotAStoreError, match="not a pytest-llamastate store"):
        LlamaStore.open(tmp_path)
    made = LlamaStore.create(tmp_path / "s", label="t::x")
    assert LlamaStore.open(made.path).label == "t::x"
