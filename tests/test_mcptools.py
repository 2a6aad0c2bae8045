"""Real MCP tools from plain functions: mcp_tools seeds, llama_mcp_server, invoke_tool."""

from __future__ import annotations

import textwrap

import pytest
from flavors import CLIENT_TOOL_NAMES, CLIENT_TOOLS_MODES, TOOLS_MODES, skip_module_without_a_stack

skip_module_without_a_stack()

BOTH_MODES = pytest.mark.parametrize("mode", ["library", "server"])

CALC = """
    import pytest
    from pytest_llamastate import McpCall, StackError, mcp_tools


    def add(a: int, b: int) -> int:
        \"\"\"Add two integers.\"\"\"
        return a + b


    def upper(text: str) -> str:
        \"\"\"Shout it.\"\"\"
        return text.upper()


    calc = mcp_tools("mcp::calc", add)
    words = mcp_tools("mcp::words", upper)
"""


def _module(body: str) -> str:
    return textwrap.dedent(CALC) + textwrap.dedent(body)


@TOOLS_MODES
@pytest.mark.exec_too
def test_a_seeded_function_is_a_listed_tool_and_the_next_test_has_none(
    pytester: pytest.Pytester, mode: str
) -> None:
    pytester.makepyfile(
        _module(
            """
            @pytest.mark.llama_toolgroups(calc)
            def test_seeded(llama_stack):
                [tool] = llama_stack.tools()
                assert (tool["name"], tool["toolgroup_id"]) == ("add", "mcp::calc")
                assert tool["description"] == "Add two integers."
                assert tool["input_schema"]["properties"]["a"]["type"] == "integer"
                assert tool["input_schema"]["required"] == ["a", "b"]
                [tg] = llama_stack.toolgroups()
                assert tg.mcp_endpoint == calc.server.url

            def test_unseeded(llama_stack):
                assert llama_stack.tools() == []
            """
        )
    )
    # No warnings: llama-stack 0.7's MCP client deprecation is ignored around our calls.
    pytester.runpytest(f"--llama-stack-mode={mode}").assert_outcomes(passed=2, warnings=0)


@CLIENT_TOOLS_MODES
def test_the_flavors_own_client_lists_the_seeded_tool(pytester: pytest.Pytester, mode: str) -> None:
    pytester.makepyfile(
        _module(
            f"""
            @pytest.mark.llama_toolgroups(calc)
            def test_client(llama_stack):
                assert {CLIENT_TOOL_NAMES} == ["add"]
            """
        )
    )
    pytester.runpytest(f"--llama-stack-mode={mode}").assert_outcomes(passed=1)


def test_invoke_tool_returns_the_result_and_the_server_saw_exactly_that_call(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        _module(
            """
            @pytest.mark.llama_toolgroups(calc, words)
            def test_invoke(llama_stack):
                assert llama_stack.invoke_tool("add", a=2, b=3) == 5
                assert calc.server.calls == [McpCall("add", {"a": 2, "b": 3})]
                assert llama_stack.invoke_tool("upper", text="hi") == "HI"
                assert words.server.calls == [McpCall("upper", {"text": "hi"})]

            @pytest.mark.llama_toolgroups(calc)
            def test_errors(llama_stack):
                with pytest.raises(StackError, match="no such tool .*it lists: add"):
                    llama_stack.invoke_tool("nope")
                with pytest.raises(StackError, match="tool 'add' failed: .*"):
                    llama_stack.invoke_tool("add", a="x", b=1)
            """
        )
    )
    # Deprecations as errors: the one inside llama-stack's MCP client would otherwise make
    # it list no tools at all. Not every warning: OGX 1.5's MCP client (the mcp package)
    # now and then leaves a socket of a closed session to the garbage collector, whose
    # ResourceWarning lands in whichever test runs then (seen once in CI, on OGX).
    pytester.runpytest("-W", "error::DeprecationWarning").assert_outcomes(passed=2)


def test_invoke_tool_in_server_mode_says_there_is_no_route(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        _module(
            """
            @pytest.mark.llama_toolgroups(calc)
            def test_invoke(llama_stack):
                with pytest.raises(StackError) as info:
                    llama_stack.invoke_tool("add", a=2, b=3)
                assert "server has no HTTP route for invoking a tool" in str(info.value)
                assert "--llama-stack-mode=library" in str(info.value)
                assert calc.server.calls == []
            """
        )
    )
    pytester.runpytest("--llama-stack-mode=server").assert_outcomes(passed=1)


def test_one_server_per_function_list_shared_by_tests_and_restarted_if_it_died(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        _module(
            """
            urls = []

            @pytest.mark.llama_toolgroups(calc)
            def test_first(llama_store):
                [tg] = llama_store.toolgroups()
                urls.append(tg.mcp_endpoint)

            @pytest.mark.llama_toolgroups(mcp_tools("mcp::other-id", add))
            def test_same_functions_same_server(llama_store):
                [tg] = llama_store.toolgroups()
                assert tg.mcp_endpoint == urls[0]
                calc.server.stop()

            @pytest.mark.llama_toolgroups(calc)
            def test_after_it_died(llama_stack):
                assert calc.server.alive
                assert [t["name"] for t in llama_stack.tools()] == ["add"]
                assert llama_stack.invoke_tool("add", a=1, b=1) == 2
            """
        )
    )
    pytester.runpytest().assert_outcomes(passed=3)


@pytest.mark.flavor_neutral
def test_under_xdist_each_test_sees_only_its_own_functions(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        _module(
            """
            @pytest.mark.llama_toolgroups(calc)
            def test_calc(llama_stack):
                assert [t["name"] for t in llama_stack.tools()] == ["add"]
                assert llama_stack.invoke_tool("add", a=2, b=3) == 5

            @pytest.mark.llama_toolgroups(words)
            def test_words(llama_stack):
                assert [t["name"] for t in llama_stack.tools()] == ["upper"]
                assert llama_stack.invoke_tool("upper", text="a") == "A"
            """
        )
    )
    pytester.runpytest_subprocess("-n", "2").assert_outcomes(passed=2)


def test_seed_file_names_functions_by_import_path(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        calc_tools='''
        def add(a: int, b: int) -> int:
            """Add two integers."""
            return a + b
        '''
    )
    pytester.makefile(
        ".yaml",
        toolgroups="""
        toolgroups:
          - {toolgroup_id: "mcp::calc", tools: ["calc_tools:add"]}
          - {toolgroup_id: "mcp::docs", mcp_endpoint: "http://127.0.0.1:9/docs"}
        """,
    )
    pytester.makeini("[pytest]\npythonpath = .\nllama_toolgroups_file = toolgroups.yaml\n")
    pytester.makepyfile(
        """
        def test_file_seed(llama_stack):
            assert sorted(tg.identifier for tg in llama_stack.toolgroups()) == ["mcp::calc", "mcp::docs"]
            assert [t["name"] for t in llama_stack.tools("mcp::calc")] == ["add"]
            assert llama_stack.invoke_tool("add", a=20, b=22) == 42
        """
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_llama_toolgroups_fixture_takes_mcp_tools(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        _module(
            """
            @pytest.fixture
            def llama_toolgroups(llama_toolgroups):
                return [*llama_toolgroups, words]

            def test_fixture_seed(llama_stack):
                assert [t["name"] for t in llama_stack.tools()] == ["upper"]
            """
        )
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_llama_mcp_server_records_calls_and_stops_at_teardown(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        _module(
            """
            servers = []

            def test_own_server(llama_stack, llama_mcp_server):
                server = llama_mcp_server(add, upper)
                servers.append(server)
                assert server.url.startswith("http://127.0.0.1:") and server.url.endswith("/mcp")
                llama_stack.register_toolgroup("mcp::mine", mcp_endpoint=server.url)
                assert sorted(t["name"] for t in llama_stack.tools()) == ["add", "upper"]
                assert llama_stack.invoke_tool("upper", text="x") == "X"
                assert server.calls == [McpCall("upper", {"text": "x"})]

            def test_stopped(llama_stack):
                assert not servers[0].alive
                assert llama_stack.tools() == []
            """
        )
    )
    pytester.runpytest_subprocess("-n", "2", "--dist=loadfile").assert_outcomes(passed=2)


@pytest.mark.parametrize(
    ("seed", "message"),
    [
        ('mcp_tools("calc", add)', "*the toolgroup id must start with 'mcp::'*"),
        (
            'mcp_tools("mcp::calc", lambda a: a)',
            "*<lambda> cannot be a tool: a lambda has no name*",
        ),
        (
            'mcp_tools("mcp::calc", untyped)',
            "*untyped cannot be a tool: parameter 'a' has no type hint*",
        ),
        ('mcp_tools("mcp::calc", spread)', "*spread cannot be a tool: *args*named parameters*"),
        ('mcp_tools("mcp::calc", add, add2)', "*two tools named 'add'*"),
        ('mcp_tools("mcp::calc", len)', "*cannot be a tool: not a Python function*"),
        ('mcp_tools("mcp::calc")', "*no functions to serve as tools*"),
    ],
)
def test_a_marker_seed_that_cannot_be_served_stops_the_run(
    pytester: pytest.Pytester, seed: str, message: str
) -> None:
    pytester.makepyfile(
        _module(
            f"""
            def untyped(a, b: int) -> int:
                return b

            def spread(*args: int) -> int:
                return 0

            def add2(a: int) -> int:
                return a

            add2.__name__ = "add"

            @pytest.mark.llama_toolgroups({seed})
            def test_it(llama_store):
                pass
            """
        )
    )
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: *test_it: llama_toolgroups: {message}"])


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('{toolgroup_id: "mcp::c", tools: ["nosuchmodule:add"]}', "*cannot import 'nosuchmodule'*"),
        ('{toolgroup_id: "mcp::c", tools: ["calc_tools:nope"]}', "*'calc_tools' has no 'nope'*"),
        ('{toolgroup_id: "mcp::c", tools: ["calc_tools.add"]}', "*is not an import path like*"),
        ('{toolgroup_id: "mcp::c", tools: ["calc_tools:untyped"]}', "*has no type hint*"),
        ('{toolgroup_id: "c", tools: ["calc_tools:add"]}', "*must start with 'mcp::'*"),
        ('{toolgroup_id: "mcp::c", tools: "calc_tools:add"}', "*tools must be a list*"),
        ('{toolgroup_id: "mcp::c", tools: [], args: {}}', "*unknown key(s) args*"),
    ],
)
def test_a_seed_file_entry_that_cannot_be_served_stops_the_run(
    pytester: pytest.Pytester, entry: str, message: str
) -> None:
    pytester.makepyfile(
        calc_tools="""
        def add(a: int, b: int) -> int:
            return a + b

        def untyped(a):
            return a
        """
    )
    pytester.makefile(".yaml", toolgroups=f"toolgroups:\n  - {entry}\n")
    pytester.makeini("[pytest]\npythonpath = .\nllama_toolgroups_file = toolgroups.yaml\n")
    pytester.makepyfile("def test_it(llama_store): pass")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: llama_toolgroups_file: *toolgroups.yaml: {message}"])


def test_bad_functions_for_llama_mcp_server_and_a_server_that_fails_to_start_are_test_errors(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        _module(
            """
            def test_lambda(llama_mcp_server):
                llama_mcp_server(lambda a: a)

            def test_no_start(llama_mcp_server, monkeypatch):
                async def refuse(self, sockets=None):
                    raise OSError("port taken by a test")

                monkeypatch.setattr("uvicorn.Server.startup", refuse)
                llama_mcp_server(add, upper)

            def test_fixture_seed_bad(llama_toolgroups, llama_store):
                pass

            @pytest.fixture
            def llama_toolgroups():
                return [mcp_tools("mcp::x", lambda: 1)]
            """
        )
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*llama_toolgroups: mcp_tools('mcp::x'): *<lambda> cannot be a tool*",
            "*llama_mcp_server: *<lambda> cannot be a tool: a lambda has no name*",
            "*the MCP server for add, upper did not start on port *: OSError: port taken by a test",
        ]
    )


def test_kept_stores_under_basetemp_are_said_to_vanish(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_fails(llama_store): assert False")
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(
        [
            "*llama stores kept*",
            "test_kept_stores_under_basetemp_are_said_to_vanish.py::test_fails: *",
            "",
            "note: these stores are under pytest's basetemp and vanish with it: pytest empties "
            "--basetemp at the start of every run that passes it. Keep them elsewhere with "
            "--llama-store-dir DIR.",
        ]
    )
    result = pytester.runpytest(f"--llama-store-dir={pytester.path / 'stores'}")
    result.stdout.no_fnmatch_line("note: these stores are under pytest's basetemp*")


def test_a_persistent_store_keeps_its_fingerprint_and_follows_the_new_server(
    pytester: pytest.Pytester,
) -> None:
    """Each session's server has a new port: the store must not be rebuilt for it, and
    its row must point at this session's server."""
    pytester.makepyfile(
        _module(
            """
            @pytest.mark.persistent("tools")
            @pytest.mark.llama_toolgroups(calc)
            def test_soak(llama_stack):
                [tg] = llama_stack.toolgroups()
                assert tg.mcp_endpoint == calc.server.url
                assert llama_stack.invoke_tool("add", a=1, b=2) == 3
            """
        )
    )
    pytester.runpytest().assert_outcomes(passed=1)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["tools: * (reused, used by 1 test(s))"])
