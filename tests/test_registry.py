"""The registry: keys in the installed stack's format, snapshots of a store, their diff."""

from __future__ import annotations

from pathlib import Path

import pytest
from flavors import KEY, skip_module_without_a_stack

from pytest_llamastate import LlamaStore
from pytest_llamastate.state.registry import installed_format
from pytest_llamastate.state.seed_rows import TemplateCache
from pytest_llamastate.state.seeds import ToolgroupSeed
from pytest_llamastate.storage.sqlite import write_entries

skip_module_without_a_stack()
pytestmark = pytest.mark.both_backends


def test_store_inspection_keys_and_snapshot_diff(tmp_path: Path) -> None:
    store = LlamaStore.create(tmp_path / "s")
    fmt = installed_format()
    TemplateCache(tmp_path / "t").apply(
        (
            ToolgroupSeed("mcp::keep", mcp_endpoint="http://h/k"),
            ToolgroupSeed("mcp::gone", mcp_endpoint="http://h/g"),
            ToolgroupSeed("mcp::edit", mcp_endpoint="http://h/e"),
        ),
        store,
    )
    before = store.snapshot()
    key_new, value_new = fmt.toolgroup_row("mcp::new", "model-context-protocol", "http://h/n")
    key_edit, value_edit = fmt.toolgroup_row("mcp::edit", "model-context-protocol", "http://h/E")
    write_entries(
        store.kvstore_path,
        {key_new: value_new, key_edit: value_edit, fmt.key("tool_group", "mcp::gone"): None},
    )
    diff = before.diff(store.snapshot())
    assert diff.lines() == [
        "+ tool_group:mcp::new",
        "- tool_group:mcp::gone",
        "~ tool_group:mcp::edit",
    ]
    assert not before.diff(before)
    assert store.keys(f"{KEY}tool_group:mcp::e") == [key_edit]
    assert len(store.keys()) == 3
