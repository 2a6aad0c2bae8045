"""Exact environment restore: ``environ`` itself, and the plugin's rule that after a test
every variable a store set is what it was before, whatever the fixtures did."""

from __future__ import annotations

import os

import pytest

from pytest_llamastate.state import environ

MANAGED = ("SQLITE_STORE_DIR", "FILES_STORAGE_DIR", "MILVUS_DB_PATH", "LLAMA_STACK_CONFIG_DIR")


def test_patched_restores_set_and_unset_variables_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LS_A", "a")
    monkeypatch.delenv("LS_B", raising=False)
    monkeypatch.setenv("LS_C", "c")
    with environ.patched({"LS_A": "x", "LS_B": "y"}, unset=["LS_C"]):
        assert (os.environ["LS_A"], os.environ["LS_B"], "LS_C" in os.environ) == ("x", "y", False)
        os.environ["LS_C"] = "changed inside"
        del os.environ["LS_A"]
    assert os.environ["LS_A"] == "a"
    assert "LS_B" not in os.environ
    assert os.environ["LS_C"] == "c"


def test_patched_restores_after_an_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LS_A", raising=False)
    with pytest.raises(KeyError), environ.patched({"LS_A": "x"}):
        raise KeyError
    assert "LS_A" not in os.environ


# The user's suite records the managed variables in pytest_unconfigure, after everything.
CONFTEST = f"""
import os, json, pytest
NAMES = {MANAGED!r}

def snapshot():
    return {{n: os.environ.get(n) for n in NAMES}}

def pytest_configure(config):
    config._before = snapshot()

def pytest_unconfigure(config):
    with open("env-at-unconfigure.json", "w") as f:
        json.dump({{"before": config._before, "after": snapshot()}}, f)

@pytest.fixture
def patched_below(monkeypatch):
    monkeypatch.setenv("SQLITE_STORE_DIR", "/below")
    monkeypatch.delenv("FILES_STORAGE_DIR", raising=False)

@pytest.fixture
def patched_above(llama_store, monkeypatch):
    monkeypatch.setenv("SQLITE_STORE_DIR", "/above")
    monkeypatch.delenv("MILVUS_DB_PATH")

@pytest.fixture
def monkeypatch_first_then_store(monkeypatch, llama_store):
    monkeypatch.setenv("SQLITE_STORE_DIR", "/first")
    return llama_store
"""

TESTS = f"""
import os

def test_body(monkeypatch, llama_store):
    monkeypatch.setenv("SQLITE_STORE_DIR", "/elsewhere")
    monkeypatch.delenv("FILES_STORAGE_DIR")

def test_body_store_first(llama_store, monkeypatch):
    monkeypatch.setenv("SQLITE_STORE_DIR", "/elsewhere")

def test_fixture_below(patched_below, llama_store):
    assert os.environ["SQLITE_STORE_DIR"] == str(llama_store.path)

def test_fixture_above(patched_above):
    assert os.environ["SQLITE_STORE_DIR"] == "/above"

def test_monkeypatch_requested_before_the_store(monkeypatch_first_then_store):
    pass

def test_plain_write(llama_store):
    os.environ["SQLITE_STORE_DIR"] = "/written"
    del os.environ["MILVUS_DB_PATH"]

def test_next_sees_the_original():
    import json
    assert {{n: os.environ.get(n) for n in {MANAGED!r}}} == json.loads(os.environ["EXPECTED"])
"""


@pytest.mark.parametrize("initially_set", [True, False], ids=["set", "unset"])
def test_every_fixture_order_leaves_the_variables_as_before(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, initially_set: bool
) -> None:
    import json

    for name in MANAGED:
        if initially_set:
            monkeypatch.setenv(name, f"/original/{name}")
        else:
            monkeypatch.delenv(name, raising=False)
    expected = {n: (f"/original/{n}" if initially_set else None) for n in MANAGED}
    monkeypatch.setenv("EXPECTED", json.dumps(expected))
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(TESTS)
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=7)
    recorded = json.loads((pytester.path / "env-at-unconfigure.json").read_text())
    assert recorded["before"] == expected
    assert recorded["after"] == expected
