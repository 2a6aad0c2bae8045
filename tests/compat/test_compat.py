"""The compatibility suite: one user's suite, run on whichever release is installed.

`make test-compat` runs this file in the venv of every tested release (releases.TESTED):
each fixture, marker, option and command once, in library and server mode, with the
seed's scenario (a toolgroup registered through the release's own ``client.toolgroups``
where it has one, ``restart()``, still there, the next test fresh). Each inner run is a
subprocess: a library stack keeps its storage in process globals.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_llamastate.releases import detect
from pytest_llamastate.releases.tested import TESTED

FLAVOR = detect()
VERSION = FLAVOR.version()

pytestmark = pytest.mark.skipif(VERSION is None, reason="needs llama-stack or ogx installed")

#: A user's suite: the seed's scenario, seeds, the stack's own client, MCP tools, templates.
SUITE = '''
import pytest

from pytest_llamastate import ToolgroupSeed, llama_template, mcp_tools

ENDPOINT = "http://127.0.0.1:9/mcp"
pytestmark = pytest.mark.llama_toolgroups(ToolgroupSeed("mcp::seeded", mcp_endpoint=ENDPOINT))


def ids(stack):
    return sorted(tg.identifier for tg in stack.toolgroups())


def test_scenario_register_restart_still_there(llama_stack, llama_store):
    flavor = llama_stack.flavor
    if flavor.toolgroup_api:  # the release's own client, as its users register
        llama_stack.client.toolgroups.register(
            toolgroup_id="mcp::mine",
            provider_id="model-context-protocol",
            mcp_endpoint={"uri": ENDPOINT},
        )
        listed = [tg.identifier for tg in llama_stack.client.toolgroups.list()]
        assert "mcp::mine" in listed
    else:
        llama_stack.register_toolgroup("mcp::mine", mcp_endpoint=ENDPOINT)
    assert ids(llama_stack) == ["mcp::mine", "mcp::seeded"]
    assert "mcp::mine" in [tg.identifier for tg in llama_store.toolgroups()]
    llama_stack.restart()
    assert ids(llama_stack) == ["mcp::mine", "mcp::seeded"]


def test_next_test_is_fresh(llama_stack):
    assert ids(llama_stack) == ["mcp::seeded"]


def test_unregister(llama_stack, llama_store):
    before = llama_store.snapshot()
    llama_stack.unregister_toolgroup("mcp::seeded")
    assert ids(llama_stack) == []
    assert before.diff(llama_store.snapshot()).lines() == ["- tool_group:mcp::seeded"]


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@pytest.mark.llama_toolgroups(mcp_tools("mcp::calc", add))
def test_mcp_tools(llama_stack, llama_stack_factory):
    if llama_stack_factory.mode == "server" and llama_stack.flavor.tools_route_bug:
        pytest.skip(llama_stack.flavor.tools_route_bug)
    names = [tool["name"] for tool in llama_stack.tools("mcp::calc")]
    assert "add" in names


@llama_template
def calc_registered(stack):
    stack.register_toolgroup("mcp::templated", mcp_endpoint=ENDPOINT)


@pytest.mark.llama_template("calc_registered")
def test_template(llama_store):
    assert "mcp::templated" in [tg.identifier for tg in llama_store.toolgroups()]


def test_ogx_name_and_config(ogx_stack, llama_stack_config):
    assert ogx_stack.running
    assert str(llama_stack_config).endswith(ogx_stack.flavor.config_template)
'''

PERSISTENT = """
import pytest

ENDPOINT = "http://127.0.0.1:9/mcp"


@pytest.mark.persistent("soak")
def test_persistent(llama_store, request):
    expected = request.config.getoption("expect")
    assert [tg.identifier for tg in llama_store.toolgroups()] == expected
    if not expected:
        stack = request.getfixturevalue("llama_stack")
        stack.register_toolgroup("mcp::kept", mcp_endpoint=ENDPOINT)
"""

PERSISTENT_CONFTEST = """
def pytest_addoption(parser):
    parser.addoption("--expect", action="append", default=[])
"""

FAILING = """
import pytest

from pytest_llamastate import ToolgroupSeed


@pytest.mark.llama_toolgroups(ToolgroupSeed("mcp::kept", mcp_endpoint="http://127.0.0.1:9/mcp"))
def test_fails(llama_stack):
    assert llama_stack.running
    raise AssertionError("kept for llamastate show")
"""


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", *args)


def header(result: pytest.RunResult) -> str:
    return next(line for line in result.outlines if "flavor=" in line)


def test_release_is_tested_and_header_names_it_with_its_format(pytester: pytest.Pytester) -> None:
    assert (FLAVOR.distribution, VERSION) in [(t.distribution, t.version) for t in TESTED]
    pytester.makepyfile(test_x="def test_x(llama_store): pass")
    result = run(pytester)
    result.assert_outcomes(passed=1)
    assert f"flavor={FLAVOR.name} {VERSION} ({FLAVOR.format})" in header(result)


@pytest.mark.parametrize("mode", ["library", "server"])
def test_users_suite(pytester: pytest.Pytester, mode: str) -> None:
    pytester.makepyfile(test_suite=SUITE)
    result = run(pytester, f"--llama-stack-mode={mode}", "-v")
    skipped = int(mode == "server" and bool(FLAVOR.tools_route_bug))  # OGX 1.5's tools route
    result.assert_outcomes(passed=6 - skipped, skipped=skipped)


def test_persistent_store_across_runs_and_its_reset(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(PERSISTENT_CONFTEST)
    pytester.makepyfile(test_soak=PERSISTENT)
    persist = ["--llama-persist-dir", str(pytester.path / "persist")]
    run(pytester, *persist).assert_outcomes(passed=1)
    run(pytester, *persist, "--expect=mcp::kept").assert_outcomes(passed=1)
    run(pytester, *persist, "--llama-reset-persistent=soak").assert_outcomes(passed=1)


def test_failed_tests_store_is_kept_and_llamastate_reads_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_fail=FAILING)
    stores = pytester.path / "stores"
    result = run(pytester, "--llama-store-dir", str(stores), "--llama-stack-mode=server")
    result.assert_outcomes(failed=1)
    (kept,) = stores.glob("run-*/test_fails*")
    cli = [str(Path(sys.executable).with_name("llamastate"))]
    shown = subprocess.run([*cli, "show", "--json", str(kept)], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    toolgroups = json.loads(shown.stdout)["toolgroups"]
    assert [tg["identifier"] for tg in toolgroups] == ["mcp::kept"]
    listed = subprocess.run([*cli, "ls", str(stores)], capture_output=True, text=True)
    assert re.search(r"test_fails", listed.stdout), listed.stdout + listed.stderr
