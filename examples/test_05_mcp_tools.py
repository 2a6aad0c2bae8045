"""Real MCP tools from plain functions: seed a toolgroup with them, list and call them."""

import pytest

from pytest_llamastate import McpCall, mcp_tools


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


# The server starts when a test's store is made, once per session for this function list.
calc = mcp_tools("mcp::calc", add)


@pytest.mark.llama_toolgroups(calc)
def test_the_agent_sees_the_tool(llama_stack):
    [tool] = llama_stack.tools("mcp::calc")
    assert tool["name"] == "add"
    assert tool["description"] == "Add two integers."  # the docstring
    assert tool["input_schema"]["required"] == ["a", "b"]  # the type hints


@pytest.mark.llama_toolgroups(calc)
def test_calling_it(llama_stack):
    assert llama_stack.invoke_tool("add", a=2, b=3) == 5  # library mode
    assert calc.server.calls[-1] == McpCall("add", {"a": 2, "b": 3})


def test_a_server_of_your_own(llama_stack, llama_mcp_server):
    server = llama_mcp_server(add, multiply)  # stopped when the test ends
    llama_stack.register_toolgroup("mcp::math", mcp_endpoint=server.url)
    assert llama_stack.invoke_tool("multiply", a=6, b=7) == 42
    assert server.calls == [McpCall("multiply", {"a": 6, "b": 7})]
