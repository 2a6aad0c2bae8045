"""A real Llama Stack per test, on the test's own store (in-process by default)."""


def test_register_a_toolgroup(llama_stack):
    llama_stack.register_toolgroup("mcp::weather", mcp_endpoint="http://127.0.0.1:8001/mcp")
    assert "mcp::weather" in [tg.identifier for tg in llama_stack.toolgroups()]


def test_the_next_test_starts_clean(llama_stack):
    # Only the suite-wide seed from toolgroups.yaml; mcp::weather stayed in the other store.
    assert [tg.identifier for tg in llama_stack.toolgroups()] == ["mcp::docs"]


def test_restart_keeps_what_was_registered(llama_stack):
    llama_stack.register_toolgroup("mcp::calendar", mcp_endpoint="http://127.0.0.1:8002/mcp")
    llama_stack.restart()
    assert "mcp::calendar" in [tg.identifier for tg in llama_stack.toolgroups()]
