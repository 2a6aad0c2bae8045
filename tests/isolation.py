"""The isolation suite: consecutive stacks of one pytest run, each with its own files
(uploaded through the client, so through the stack's routes), one registering a toolgroup,
the next seeing none of it. ``compat/test_shortcuts.py`` runs it with library stacks
(their shared route table and schema), ``test_readymade.py`` with forked servers (their
prebuilt routers).
"""

ISOLATION = """
import io
import pytest

def upload(client, name):
    data = io.BytesIO(b"notes")
    data.name = name
    client.files.create(file=data, purpose="assistants")

def names(client):
    return [f.filename for f in client.files.list().data]

@pytest.mark.parametrize("n", range(3))
def test_each_stack_has_its_own_files(llama_stack, n):
    assert names(llama_stack.client) == []
    upload(llama_stack.client, f"file{n}.txt")
    assert names(llama_stack.client) == [f"file{n}.txt"]

def test_registers(llama_stack):
    llama_stack.register_toolgroup("mcp::one", mcp_endpoint="http://127.0.0.1:9/sse")
    upload(llama_stack.client, "kept.txt")
    assert [tg.identifier for tg in llama_stack.toolgroups()] == ["mcp::one"]

def test_sees_none_of_it(llama_stack):
    assert llama_stack.toolgroups() == []
    assert names(llama_stack.client) == []
"""
