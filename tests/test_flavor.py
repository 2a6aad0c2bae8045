"""llama-stack or OGX: detection, the llama_flavor option, and what differs between them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from flavors import FLAVOR, KEY, needs_stack

from pytest_llamastate.releases import FLAVORS, LLAMA_STACK, OGX, Flavor, detect
from pytest_llamastate.state.guard import real_state_homes
from pytest_llamastate.state.store import state_env

OTHER = OGX if FLAVOR is LLAMA_STACK else LLAMA_STACK


@pytest.mark.parametrize(
    ("installed", "choice", "expected"),
    [
        ({"ogx"}, "auto", OGX),
        ({"llama-stack"}, "auto", LLAMA_STACK),
        # Adding ogx beside llama-stack must not change what a suite runs.
        ({"llama-stack", "ogx"}, "auto", LLAMA_STACK),
        # Neither: errors then name the install command most suites start from.
        (set(), "auto", LLAMA_STACK),
        (set(), "ogx", OGX),
        ({"ogx"}, "llama-stack", LLAMA_STACK),
    ],
)
def test_detect(
    monkeypatch: pytest.MonkeyPatch, installed: set[str], choice: str, expected: Flavor
) -> None:
    monkeypatch.setattr(Flavor, "installed", lambda self: self.name in installed)
    assert detect(choice) is expected


def test_detect_refuses_an_unknown_name() -> None:
    with pytest.raises(ValueError, match="unknown flavor 'llama'; allowed: auto, llama-stack, ogx"):
        detect("llama")


def test_detection_imports_neither_package() -> None:
    code = (
        "import sys\n"
        "from pytest_llamastate.releases import detect\n"
        "detect().version()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('llama_stack', 'ogx')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_flavors_homes_are_guarded_and_config_dirs_isolated(tmp_path: Path) -> None:
    """Whichever is installed: the OGX CLI moves ~/.llama unless OGX_CONFIG_DIR is set."""
    env = state_env(tmp_path)
    assert {env[f.config_dir_var] for f in FLAVORS} == {str(tmp_path / "config")}
    homes = real_state_homes({"HOME": str(tmp_path)})
    assert {tmp_path / ".llama", tmp_path / ".ogx"} <= set(homes)


def test_header_names_the_flavor_and_its_version(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_it(): pass")
    version = FLAVOR.version() or "not installed"
    pytester.runpytest().stdout.fnmatch_lines([f"*flavor={FLAVOR.name} {version}*"])


@pytest.mark.skipif(OTHER.installed(), reason="both flavors are installed")
def test_choosing_the_flavor_that_is_not_installed_names_its_install_command(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        def test_stack(llama_stack): pass
        def test_store_still_works(llama_store): pass
        """
    )
    result = pytester.runpytest(f"--llama-flavor={OTHER.name}")
    result.assert_outcomes(passed=1, errors=1)
    hint = OTHER.install_hint.replace("[", "?").replace("]", "?")
    result.stdout.fnmatch_lines(
        [f"*flavor={OTHER.name} not installed*", f"{OTHER.name} is not installed *: {hint}"]
    )


@needs_stack
def test_ogx_stack_is_the_llama_stack(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_it(ogx_stack, llama_stack):
            assert ogx_stack is llama_stack
            assert ogx_stack.running
        """
    )
    pytester.runpytest().assert_outcomes(passed=1)


def _config_with_namespace(pytester: pytest.Pytester, namespace: str) -> Path:
    config = pytester.path / "custom.yaml"
    config.write_text(
        FLAVOR.default_config.read_text().replace(
            "backend: kv_default\n      namespace: registry",
            f"backend: kv_default\n      namespace: {namespace}",
        )
    )
    assert f"namespace: {namespace}" in config.read_text()
    return config


SEEDED = """
import pytest

@pytest.mark.llama_toolgroups({"toolgroup_id": "mcp::seed", "mcp_endpoint": "http://h/s"})
def test_it(llama_store, request):
    assert llama_store.keys() == [KEY_BEFORE]
    stack = request.getfixturevalue("llama_stack")
    assert [t.identifier for t in stack.toolgroups()] == ["mcp::seed"]
    assert llama_store.keys() == [KEY_AFTER]
"""


@needs_stack
@pytest.mark.parametrize("mode", ["library", "server"])
def test_seeds_are_written_under_the_session_configs_namespace(
    pytester: pytest.Pytester, mode: str
) -> None:
    """OGX reads only keys under its metadata namespace; the seeds must be there."""
    config = _config_with_namespace(pytester, "custom")
    key = ("custom:" if FLAVOR.namespaced_keys else "") + "distributions:registry:v10::"
    seed_key = repr(f"{key}tool_group:mcp::seed")
    pytester.makepyfile(SEEDED.replace("KEY_BEFORE", seed_key).replace("KEY_AFTER", seed_key))
    pytester.runpytest(
        f"--llama-stack-config={config}", f"--llama-stack-mode={mode}"
    ).assert_outcomes(passed=1)


@needs_stack
def test_a_tests_own_config_with_another_namespace_still_sees_the_seeds(
    pytester: pytest.Pytester,
) -> None:
    """Seeds are written for the session's config; a fixture's own config moves them."""
    config = _config_with_namespace(pytester, "mine")
    pytester.makeconftest(
        f"""
        import pytest
        @pytest.fixture
        def llama_stack_config():
            return {str(config)!r}
        """
    )
    mine = ("mine:" if FLAVOR.namespaced_keys else "") + "distributions:registry:v10::"
    pytester.makepyfile(
        SEEDED.replace("KEY_BEFORE", repr(f"{KEY}tool_group:mcp::seed")).replace(
            "KEY_AFTER", repr(f"{mine}tool_group:mcp::seed")
        )
    )
    pytester.runpytest().assert_outcomes(passed=1)


@needs_stack
def test_a_server_start_leaves_a_real_dot_llama_where_it_is(pytester: pytest.Pytester) -> None:
    """The OGX CLI moves ~/.llama to ~/.ogx unless OGX_CONFIG_DIR is set; we set it."""
    marker = pytester.path / ".llama" / "marker"  # pytester's HOME
    marker.parent.mkdir()
    marker.write_text("mine")
    pytester.makepyfile(
        f"""
        import os
        def test_it(llama_stack, llama_store):
            assert os.environ["{FLAVOR.config_dir_var}"] == str(llama_store.path / "config")
            assert llama_stack.base_url
        """
    )
    pytester.runpytest("--llama-stack-mode=server").assert_outcomes(passed=1)
    assert marker.read_text() == "mine"
    assert not (pytester.path / ".ogx").exists()


@pytest.mark.skipif(FLAVOR is not OGX or not OGX.installed(), reason="needs ogx")
def test_ogx_server_tools_explains_the_upstream_bug(pytester: pytest.Pytester) -> None:
    """ogx 1.5's only list-tools route fails; say why instead of a bare HTTP 500.

    When this test fails, OGX fixed the route: drop it and the xfail marks.
    """
    pytester.makepyfile(
        """
        import pytest
        from pytest_llamastate import StackError

        def test_it(llama_stack):
            with pytest.raises(StackError, match="HTTP 500.*known upstream bug: ogx 1.5.*library mode"):
                llama_stack.tools()
        """
    )
    pytester.runpytest("--llama-stack-mode=server").assert_outcomes(passed=1)
