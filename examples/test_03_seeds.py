"""Toolgroup seeds: the toolgroups a test starts with, in its store before it runs."""

import pytest

from pytest_llamastate import ToolgroupSeed

pytestmark = pytest.mark.llama_toolgroups(
    ToolgroupSeed("mcp::search", mcp_endpoint="http://127.0.0.1:8003/mcp"),
)


def test_module_marker_and_suite_file(llama_store):
    # No stack needed to look: the store is read straight from kvstore.db.
    assert sorted(tg.identifier for tg in llama_store.toolgroups()) == ["mcp::docs", "mcp::search"]


@pytest.mark.llama_toolgroups(
    {
        "toolgroup_id": "mcp::crm",
        "mcp_endpoint": "http://127.0.0.1:8004/mcp",
        "args": {"tenant": "acme"},
    }
)
def test_a_running_stack_sees_its_seeds(llama_stack):
    listed = {tg.identifier: tg for tg in llama_stack.toolgroups()}
    assert sorted(listed) == ["mcp::crm", "mcp::docs", "mcp::search"]
    assert listed["mcp::crm"].args == {"tenant": "acme"}


def test_what_a_test_changed(llama_stack, llama_store):
    before = llama_store.snapshot()
    llama_stack.register_toolgroup("mcp::new", mcp_endpoint="http://127.0.0.1:8005/mcp")
    llama_stack.unregister_toolgroup("mcp::search")
    changes = before.diff(llama_store.snapshot())
    assert changes.lines() == ["+ tool_group:mcp::new", "- tool_group:mcp::search"]
