"""Run configs: the checks that keep a stack's state in its store, and env resolution."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest
from flavors import FLAVOR, skip_module_without_a_stack

skip_module_without_a_stack()
MINIMAL = FLAVOR.default_config


@pytest.mark.both_backends
class TestConfigChecks:
    MINIMAL = MINIMAL

    def test_bad_config_from_the_fixture_errors_the_test(self, pytester: pytest.Pytester) -> None:
        config = pytester.path / "mine.yaml"
        config.write_text(
            self.MINIMAL.read_text().replace(
                "${env.SQLITE_STORE_DIR}/sql_store.db", "/var/tmp/elsewhere.db"
            )
        )
        pytester.makeconftest(
            f"""
            import pytest
            @pytest.fixture
            def llama_stack_config():
                return {str(config)!r}
            """
        )
        pytester.makepyfile("def test_it(llama_stack): pass")
        result = pytester.runpytest()
        result.assert_outcomes(errors=1)
        result.stdout.fnmatch_lines(
            ["*sql_default.db_path = /var/tmp/elsewhere.db is outside the test's store*"]
        )
        assert "Traceback" not in result.stdout.str()

    def test_own_config_from_the_fixture_is_used(self, pytester: pytest.Pytester) -> None:
        config = pytester.path / "mine.yml"  # .yml: the plugin copies it to stack.yaml
        config.write_text(self.MINIMAL.read_text().replace("pytest-llamastate", "my-distro"))
        pytester.makeconftest(
            f"""
            import pytest
            @pytest.fixture
            def llama_stack_config():
                return {str(config)!r}
            """
        )
        pytester.makepyfile(
            """
            def test_it(llama_stack):
                assert "my-distro" in (llama_stack.store.path / "stack.yaml").read_text()
            """
        )
        pytester.runpytest().assert_outcomes(passed=1)

    def test_env_resolution_agrees_with_the_stack(self, tmp_path: Path) -> None:
        """Our resolver (used before any stack starts) must read configs as the stack does."""
        import yaml

        replace_env_vars = importlib.import_module(f"{FLAVOR.package}.core.stack").replace_env_vars

        from pytest_llamastate.state.stackconfig import resolve_env

        text = (
            "a: ${env.SET_VAR}\nb: ${env.UNSET_VAR:=fallback}\nc: ${env.SET_VAR:+if-set}\n"
            "d: ${env.UNSET_VAR:+if-set}\ne: x-${env.SET_VAR:=d}-y\nf: ${env.UNSET_VAR:=}\n"
        )
        environ = {"SET_VAR": "value"}
        saved = dict(os.environ)
        try:
            os.environ.pop("UNSET_VAR", None)
            os.environ.update(environ)
            theirs = replace_env_vars(yaml.safe_load(text))
        finally:
            os.environ.clear()
            os.environ.update(saved)
        ours = yaml.safe_load(resolve_env(text, environ))
        assert {k: v or None for k, v in ours.items()} == {k: v or None for k, v in theirs.items()}
        with pytest.raises(KeyError, match="UNSET_VAR"):
            resolve_env("${env.UNSET_VAR}", environ)


def test_a_hook_that_breaks_the_config_is_caught_by_the_checks(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        def pytest_llamastate_stack_config(config, store, request):
            config["storage"]["backends"]["kv_default"]["db_path"] = "/var/tmp/x.db"
        """
    )
    pytester.makepyfile("def test_it(llama_stack): pass")
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*kv_default.db_path = /var/tmp/x.db is outside the test's store*"]
    )
