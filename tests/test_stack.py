"""The llama_stack fixture against the real llama-stack (or ogx) package, in both modes."""

from __future__ import annotations

import re

import pytest
from flavors import FLAVOR, TOOLS_MODES, skip_module_without_a_stack

skip_module_without_a_stack()
pytestmark = pytest.mark.both_backends

BOTH_MODES = pytest.mark.parametrize("mode", ["library", "server"])
MINIMAL = FLAVOR.default_config


@BOTH_MODES
@pytest.mark.exec_too
def test_a_toolgroup_registered_in_one_test_is_absent_in_the_next(
    pytester: pytest.Pytester, mode: str
) -> None:
    pytester.makepyfile(
        """
        def test_a(llama_stack):
            llama_stack.register_toolgroup(
                "mcp::one", mcp_endpoint="http://127.0.0.1:9/sse", args={"k": "v"}
            )
            [tg] = llama_stack.toolgroups()
            assert (tg.identifier, tg.provider_id, tg.mcp_endpoint, tg.args) == (
                "mcp::one", "model-context-protocol", "http://127.0.0.1:9/sse", {"k": "v"}
            )

        def test_b(llama_stack):
            assert llama_stack.toolgroups() == []
        """
    )
    pytester.runpytest(f"--llama-stack-mode={mode}").assert_outcomes(passed=2)
    assert not (pytester.path / ".llama").exists()
    assert not (pytester.path / ".ogx").exists()


@TOOLS_MODES
def test_tools_of_one_stack_do_not_leak_into_the_next(
    pytester: pytest.Pytester, mode: str, mcp_url: str
) -> None:
    pytester.makepyfile(
        f"""
        def test_a(llama_stack):
            llama_stack.register_toolgroup("mcp::calc", mcp_endpoint="{mcp_url}")
            assert [t["name"] for t in llama_stack.tools()] == ["add"]

        def test_b(llama_stack):
            assert llama_stack.tools() == []
        """
    )
    pytester.runpytest(f"--llama-stack-mode={mode}").assert_outcomes(passed=2)


def test_same_toolgroup_id_in_the_next_test_serves_the_next_servers_tools(
    pytester: pytest.Pytester, mcp_url: str, mcp_url_2: str
) -> None:
    """llama-stack indexes tools in class attributes; a stale index would answer 'add'."""
    pytester.makepyfile(
        f"""
        def test_a(llama_stack):
            llama_stack.register_toolgroup("mcp::calc", mcp_endpoint="{mcp_url}")
            assert [t["name"] for t in llama_stack.tools()] == ["add"]

        def test_b(llama_stack):
            llama_stack.register_toolgroup("mcp::calc", mcp_endpoint="{mcp_url_2}")
            assert [t["name"] for t in llama_stack.tools()] == ["multiply"]
        """
    )
    pytester.runpytest().assert_outcomes(passed=2)


@BOTH_MODES
@pytest.mark.exec_too
def test_restart_keeps_registrations_and_unregister_removes(
    pytester: pytest.Pytester, mode: str
) -> None:
    pytester.makepyfile(
        """
        def test_it(llama_stack):
            llama_stack.register_toolgroup("mcp::a", mcp_endpoint="http://127.0.0.1:9/a")
            llama_stack.register_toolgroup("mcp::b", mcp_endpoint="http://127.0.0.1:9/b")
            llama_stack.restart()
            assert sorted(t.identifier for t in llama_stack.toolgroups()) == ["mcp::a", "mcp::b"]
            llama_stack.unregister_toolgroup("mcp::a")
            llama_stack.restart()
            assert [t.identifier for t in llama_stack.toolgroups()] == ["mcp::b"]
        """
    )
    pytester.runpytest(f"--llama-stack-mode={mode}").assert_outcomes(passed=1)


@pytest.mark.exec_too
def test_server_mode_basics_and_log_on_failure(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import json, os, urllib.request
        def test_it(llama_stack, llama_store):
            assert llama_stack.base_url.startswith("http://127.0.0.1:")
            with urllib.request.urlopen(llama_stack.base_url + "/v1/health") as r:
                assert json.load(r) == {"status": "OK"}
            assert llama_stack.store is llama_store
            assert llama_stack.log_path.parent == llama_store.path
            assert False, "fail on purpose"
        """
    )
    result = pytester.runpytest("--llama-stack-mode=server")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*fail on purpose*", "*- llama stack server log (*server.log) -*", "*Uvicorn running on*"]
    )


@BOTH_MODES
@pytest.mark.exec_too
def test_unknown_provider_is_named_on_the_errors_first_line(
    pytester: pytest.Pytester, mode: str
) -> None:
    config = pytester.path / "broken.yaml"
    config.write_text(
        MINIMAL.read_text().replace("remote::model-context-protocol", "remote::no-such-provider")
    )
    pytester.makepyfile("def test_it(llama_stack): pass")
    recorder = pytester.inline_run(f"--llama-stack-mode={mode}", f"--llama-stack-config={config}")
    [report] = [r for r in recorder.getreports("pytest_runtest_logreport") if r.failed]
    assert report.when == "setup"
    message = str(report.longrepr)
    first = message.splitlines()[0]
    assert "Provider `remote::no-such-provider` is not available" in first, message
    if mode == "server":
        # llama-stack exits 1; OGX 1.5 logs "Application startup failed" and exits 0.
        assert re.match(r"the server exited with code [01] during start-up: ValueError:", first)
        assert first.endswith("/server.log)")
        assert len(message.splitlines()) == 1  # the traceback is in the section, not here
        [(_, tail)] = [s for s in report.sections if "server log" in s[0]]
        assert 'File "' in tail
        error = "ValueError: Provider `remote::no-such-provider`"  # OGX logs more after it
        assert any(line.strip().startswith(error) for line in tail.splitlines())
    else:
        assert first.startswith(f"{config}: the stack did not start: ValueError:")


def test_stacks_start_under_w_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_one(llama_stack):
            llama_stack.register_toolgroup("mcp::x", mcp_endpoint="http://127.0.0.1:9/x")
        def test_two(llama_stack):
            assert llama_stack.toolgroups() == []
        """
    )
    pytester.runpytest_subprocess("-W", "error", "-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_recorder_variable_is_ignored_while_the_stack_starts(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FLAVOR.inference_mode_var, "replay")
    pytester.makepyfile(
        f"""
        import importlib, os
        def test_it(llama_stack):
            s = importlib.import_module("{FLAVOR.core}.stack")
            assert s.TEST_RECORDING_CONTEXT is None
            assert os.environ["{FLAVOR.inference_mode_var}"] == "replay"
        """
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_a_second_library_stack_in_one_process_is_refused(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from pytest_llamastate import StackError

        def test_it(llama_stack, llama_stack_factory, llama_store_factory):
            other = llama_store_factory.mktemp("other")
            with pytest.raises(StackError, match="already running in this process"):
                llama_stack_factory.start(other)
        """
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_module_scoped_stack_from_the_factories(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.fixture(scope="module")
        def shared_stack(llama_store_factory, llama_stack_factory):
            store = llama_store_factory.mktemp("shared")
            with llama_stack_factory.start(store) as stack:
                yield stack

        def test_one(shared_stack):
            shared_stack.register_toolgroup("mcp::s", mcp_endpoint="http://127.0.0.1:9/s")

        def test_two(shared_stack):
            assert [t.identifier for t in shared_stack.toolgroups()] == ["mcp::s"]
        """
    )
    pytester.runpytest().assert_outcomes(passed=2)


@pytest.mark.flavor_neutral
def test_xdist_server_mode_one_store_and_port_per_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        @pytest.mark.parametrize("n", range(4))
        def test_it(llama_stack, n):
            assert llama_stack.toolgroups() == []
            llama_stack.register_toolgroup(f"mcp::{n}", mcp_endpoint="http://127.0.0.1:9/x")
            print("PORT", llama_stack.base_url)
        """
    )
    result = pytester.runpytest_subprocess("-n", "2", "--llama-stack-mode=server", "-s")
    result.assert_outcomes(passed=4)


def test_missing_llama_stack_names_the_install_command(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        f"""
        import sys
        sys.modules["{FLAVOR.library_module}"] = None
        """
    )
    pytester.makepyfile(
        """
        def test_stack(llama_stack): pass
        def test_store_still_works(llama_store): pass
        """
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1, errors=1)
    hint = FLAVOR.install_hint.replace("[", "?").replace("]", "?")
    result.stdout.fnmatch_lines([f"{FLAVOR.name} is not installed *: {hint}"])
    assert "During handling" not in result.stdout.str()


def test_register_toolgroup_applies_the_seed_rules(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from pytest_llamastate import StackError

        def test_it(llama_stack):
            with pytest.raises(StackError, match="an MCP toolgroup needs mcp_endpoint"):
                llama_stack.register_toolgroup("mcp::no-endpoint")
            with pytest.raises(StackError, match="no provider_id"):
                llama_stack.register_toolgroup("plain")
            assert llama_stack.toolgroups() == []
        """
    )
    pytester.runpytest().assert_outcomes(passed=1)
