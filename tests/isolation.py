"""The isolation suite: consecutive stacks of one pytest run, each making something through
its client (so through the stack's routes), one registering a toolgroup, the next seeing
none of it. ``compat/test_shortcuts.py`` runs it with library stacks (their shared route
table and schema), ``test_readymade.py`` with forked servers (their prebuilt routers).
"""

from flavors import LIBRARY_UPLOADS

#: Something each stack makes through its client, so through the route table: a file,
#: or (where the library client cannot upload one) a toolgroup, named ``name``.
THROUGH_THE_CLIENT = (
    """
import io

def upload(client, name):
    data = io.BytesIO(b"notes")
    data.name = name
    client.files.create(file=data, purpose="assistants")

def names(client):
    return [f.filename for f in client.files.list().data]
"""
    if LIBRARY_UPLOADS
    else """
def upload(client, name):
    client.toolgroups.register(
        toolgroup_id=f"mcp::{name}",
        provider_id="model-context-protocol",
        mcp_endpoint={"uri": "http://127.0.0.1:9/sse"},
    )

def names(client):
    return [tg.identifier.removeprefix("mcp::") for tg in client.toolgroups.list()]
"""
)

ISOLATION = (
    THROUGH_THE_CLIENT
    + """
import pytest

@pytest.mark.parametrize("n", range(3))
def test_each_stack_has_its_own_files(llama_stack, n):
    assert names(llama_stack.client) == []
    upload(llama_stack.client, f"file{n}.txt")
    assert names(llama_stack.client) == [f"file{n}.txt"]

def test_registers(llama_stack):
    llama_stack.register_toolgroup("mcp::one", mcp_endpoint="http://127.0.0.1:9/sse")
    upload(llama_stack.client, "kept.txt")
    assert "mcp::one" in [tg.identifier for tg in llama_stack.toolgroups()]

def test_sees_none_of_it(llama_stack):
    assert llama_stack.toolgroups() == []
    assert names(llama_stack.client) == []
"""
)
