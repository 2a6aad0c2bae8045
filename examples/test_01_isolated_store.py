"""Every test gets its own Llama Stack state folder: nothing leaks between tests."""

import os

import pytest


def test_state_roots_point_into_this_tests_store(llama_store):
    assert os.environ["SQLITE_STORE_DIR"] == str(llama_store.path)
    assert os.environ["FILES_STORAGE_DIR"] == str(llama_store.path / "files")
    assert llama_store.kvstore_path == llama_store.path / "kvstore.db"
    (llama_store.path / "scratch.txt").write_text("only this test sees me")


def test_one_tests_files_are_invisible_to_the_next(llama_store):
    assert not (llama_store.path / "scratch.txt").exists()


@pytest.fixture(scope="module")
def module_store(llama_store_factory):
    """One store for the whole module: a trade-off of isolation for speed."""
    store = llama_store_factory.mktemp("module")
    with store.activate():
        yield store


def test_module_store_first(module_store):
    (module_store.path / "note.txt").write_text("kept for the next test in this module")


def test_module_store_second(module_store):
    assert (module_store.path / "note.txt").exists()
