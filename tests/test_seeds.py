"""Toolgroup seeds: declared by marker, file or fixture; in the store before the test runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flavors import KEY, TOOLS_MODES, skip_module_without_a_stack

from pytest_llamastate.state.seeds import ToolgroupSeed, load_seed_file

skip_module_without_a_stack()
pytestmark = pytest.mark.both_backends

BOTH_MODES = pytest.mark.parametrize("mode", ["library", "server"])


@BOTH_MODES
@pytest.mark.exec_too
def test_seeded_toolgroups_are_listed_by_a_running_stack(
    pytester: pytest.Pytester, mode: str
) -> None:
    pytester.makepyfile(
        """
        import pytest
        from pytest_llamastate import ToolgroupSeed

        @pytest.mark.llama_toolgroups(
            ToolgroupSeed("mcp::one", mcp_endpoint="http://127.0.0.1:9/one", args={"k": "v"}),
            {"toolgroup_id": "mcp::two", "mcp_endpoint": "http://127.0.0.1:9/two"},
        )
        def test_seeded(llama_stack):
            listed = {t.identifier: t for t in llama_stack.toolgroups()}
            assert sorted(listed) == ["mcp::one", "mcp::two"]
            assert listed["mcp::one"].args == {"k": "v"}
            assert listed["mcp::one"].provider_id == "model-context-protocol"

        def test_unseeded(llama_stack):
            assert llama_stack.toolgroups() == []
        """
    )
    pytester.runpytest(f"--llama-stack-mode={mode}").assert_outcomes(passed=2)


@TOOLS_MODES
def test_a_seeded_mcp_toolgroup_serves_its_tools(
    pytester: pytest.Pytester, mode: str, mcp_url: str
) -> None:
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.llama_toolgroups({{"toolgroup_id": "mcp::calc", "mcp_endpoint": "{mcp_url}"}})
        def test_tools(llama_stack):
            tools = llama_stack.tools()
            assert [(t["name"], t["toolgroup_id"]) for t in tools] == [("add", "mcp::calc")]
        """
    )
    pytester.runpytest(f"--llama-stack-mode={mode}").assert_outcomes(passed=1)


def test_markers_on_module_class_and_test_combine(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        pytestmark = pytest.mark.llama_toolgroups(
            {"toolgroup_id": "mcp::mod", "mcp_endpoint": "http://127.0.0.1:9/module"}
        )

        @pytest.mark.llama_toolgroups(
            {"toolgroup_id": "mcp::cls", "mcp_endpoint": "http://127.0.0.1:9/class"}
        )
        class TestGroup:
            def test_class_and_module(self, llama_store):
                assert sorted(t.identifier for t in llama_store.toolgroups()) == [
                    "mcp::cls", "mcp::mod"
                ]

            @pytest.mark.llama_toolgroups(
                {"toolgroup_id": "mcp::mod", "mcp_endpoint": "http://127.0.0.1:9/closer"}
            )
            def test_closer_seed_wins(self, llama_store):
                by_id = {t.identifier: t.mcp_endpoint for t in llama_store.toolgroups()}
                assert by_id == {
                    "mcp::mod": "http://127.0.0.1:9/closer",
                    "mcp::cls": "http://127.0.0.1:9/class",
                }

        def test_module_only(llama_store):
            assert [t.identifier for t in llama_store.toolgroups()] == ["mcp::mod"]
            assert [s.toolgroup_id for s in llama_store.seeds] == ["mcp::mod"]
        """
    )
    pytester.runpytest().assert_outcomes(passed=3)


@pytest.mark.sqlite_only
def test_two_seed_sets_do_not_see_each_other(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.llama_toolgroups({"toolgroup_id": "mcp::a", "mcp_endpoint": "http://h/a"})
        def test_a(llama_store):
            assert [t.identifier for t in llama_store.toolgroups()] == ["mcp::a"]

        @pytest.mark.llama_toolgroups({"toolgroup_id": "mcp::b", "mcp_endpoint": "http://h/b"})
        def test_b(llama_store):
            assert [t.identifier for t in llama_store.toolgroups()] == ["mcp::b"]

        @pytest.mark.llama_toolgroups({"toolgroup_id": "mcp::a", "mcp_endpoint": "http://h/a"})
        def test_a_again_after_a_write(llama_store):
            from pytest_llamastate.storage.sqlite import write_entries
            write_entries(llama_store.kvstore_path, {"extra": "x"})

        @pytest.mark.llama_toolgroups({"toolgroup_id": "mcp::a", "mcp_endpoint": "http://h/a"})
        def test_a_sees_a_clean_copy(llama_store):
            assert llama_store.keys() == ["<KEY>tool_group:mcp::a"]
        """.replace("<KEY>", KEY)
    )
    pytester.runpytest("-p", "no:randomly").assert_outcomes(passed=4)


SEED_FILES = {
    "seeds.yaml": "toolgroups:\n  - toolgroup_id: mcp::file\n    mcp_endpoint: http://h/f\n"
    "    args: {k: v}\n",
    "seeds.json": json.dumps(
        {
            "toolgroups": [
                {"toolgroup_id": "mcp::file", "mcp_endpoint": "http://h/f", "args": {"k": "v"}}
            ]
        }
    ),
    "seeds.toml": '[[toolgroups]]\ntoolgroup_id = "mcp::file"\nmcp_endpoint = "http://h/f"\n'
    'args = { k = "v" }\n',
}


@pytest.mark.parametrize("name", sorted(SEED_FILES))
def test_seeds_file_in_each_format(pytester: pytest.Pytester, name: str) -> None:
    pytester.path.joinpath(name).write_text(SEED_FILES[name])
    pytester.makeini(f"[pytest]\nllama_toolgroups_file = {name}\n")
    pytester.makepyfile(
        """
        import pytest

        def test_file_seeds(llama_store):
            [tg] = llama_store.toolgroups()
            assert (tg.identifier, tg.mcp_endpoint, tg.args) == ("mcp::file", "http://h/f", {"k": "v"})

        @pytest.mark.llama_toolgroups({"toolgroup_id": "mcp::more", "mcp_endpoint": "http://h/m"})
        def test_file_and_marker(llama_store):
            assert sorted(t.identifier for t in llama_store.toolgroups()) == ["mcp::file", "mcp::more"]
        """
    )
    pytester.runpytest().assert_outcomes(passed=2)


def test_fixture_override_computes_the_final_list(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import pytest
        from pytest_llamastate import ToolgroupSeed

        @pytest.fixture
        def llama_toolgroups(llama_toolgroups):
            return [*llama_toolgroups, ToolgroupSeed("mcp::conftest", mcp_endpoint="http://h/c")]
        """
    )
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.llama_toolgroups({"toolgroup_id": "mcp::marker", "mcp_endpoint": "http://h/m"})
        def test_it(llama_store):
            assert sorted(t.identifier for t in llama_store.toolgroups()) == ["mcp::conftest", "mcp::marker"]
        """
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_seed_with_a_provider_the_stack_lacks_errors_naming_its_providers(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        import pytest
        @pytest.mark.llama_toolgroups({"toolgroup_id": "web", "provider_id": "brave-search"})
        def test_it(llama_stack):
            pass
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "*seeded toolgroup 'web' names provider 'brave-search', which * does not have "
            "(tool_runtime providers: model-context-protocol)*"
        ]
    )


def test_seeds_under_xdist(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        pytestmark = pytest.mark.llama_toolgroups({"toolgroup_id": "mcp::x", "mcp_endpoint": "http://h/x"})

        @pytest.mark.parametrize("n", range(6))
        def test_it(llama_store, n):
            assert [t.identifier for t in llama_store.toolgroups()] == ["mcp::x"]
        """
    )
    pytester.runpytest_subprocess("-n", "2").assert_outcomes(passed=6)


def test_load_seed_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(SEED_FILES["seeds.yaml"])
    assert load_seed_file(path) == (
        ToolgroupSeed("mcp::file", "model-context-protocol", "http://h/f", {"k": "v"}),
    )
