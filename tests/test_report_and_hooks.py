"""The failure report's "llama store" section and the plugin's hooks."""

from __future__ import annotations

from pathlib import Path

import pytest
from flavors import skip_module_without_a_stack

skip_module_without_a_stack()


def test_failure_report_shows_path_toolgroups_changes_and_command(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.llama_toolgroups(
            {"toolgroup_id": "mcp::seed", "mcp_endpoint": "http://h/s"},
            {"toolgroup_id": "mcp::stays", "mcp_endpoint": "http://h/t"},
        )
        def test_it(llama_stack):
            llama_stack.register_toolgroup("mcp::new", mcp_endpoint="http://h/n")
            llama_stack.unregister_toolgroup("mcp::seed")
            assert False, "boom"
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*- llama store -*",
            "state of this test: *test_it0",
            "toolgroups: mcp::new, mcp::stays",
            "registry changes in this test:",
            "  + tool_group:mcp::new",
            "  - tool_group:mcp::seed",
            "inspect: llamastate show *test_it0",
        ]
    )


def test_failure_report_of_an_unchanged_store(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_it(llama_store):\n    assert False")
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(["toolgroups: none", "(no registry changes)"])


def test_hooks_change_seeds_and_config_and_see_the_store_come_and_go(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(
        """
        RELEASED = []

        def pytest_llamastate_seeds(seeds, request):
            seeds.append({"toolgroup_id": "mcp::hook", "mcp_endpoint": "http://h/hook"})

        def pytest_llamastate_store_created(store, request):
            (store.path / "created-by-hook").write_text(request.node.name)

        def pytest_llamastate_stack_config(config, store, request):
            config["distro_name"] = "hooked-distro"

        def pytest_llamastate_store_released(store, kept, nodeid):
            RELEASED.append((nodeid, kept, str(store.path)))

        def pytest_sessionfinish(session):
            import pathlib
            pathlib.Path("released.txt").write_text(repr(RELEASED))
        """
    )
    pytester.makepyfile(
        """
        def test_stack(llama_stack):
            assert [t.identifier for t in llama_stack.toolgroups()] == ["mcp::hook"]
            assert (llama_stack.store.path / "created-by-hook").read_text() == "test_stack"
            assert "hooked-distro" in (llama_stack.store.path / "stack.yaml").read_text()

        def test_fails(llama_store):
            assert False
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=1)
    module = "test_hooks_change_seeds_and_config_and_see_the_store_come_and_go.py"
    released = eval((pytester.path / "released.txt").read_text())
    assert [(nodeid, kept) for nodeid, kept, _ in released] == [
        (f"{module}::test_stack", False),
        (f"{module}::test_fails", True),
    ]
    # Released with kept=False means gone by the end of the run; kept means still there.
    assert [Path(path).exists() for _, _, path in released] == [False, True]
