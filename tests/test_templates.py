"""TemplateCache: seed templates built once per run from the installed stack's own rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flavors import KEY, skip_module_without_a_stack

from pytest_llamastate import LlamaStore
from pytest_llamastate.state.registry import read_entries
from pytest_llamastate.state.seed_rows import TemplateCache
from pytest_llamastate.state.seeds import SeedError, ToolgroupSeed
from pytest_llamastate.storage.sqlite_backend import SqliteStorage

skip_module_without_a_stack()
pytestmark = pytest.mark.both_backends


def test_seed_rows_equal_the_rows_the_stack_writes_itself(llama_stack_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The template is built from the installed package's own key format and model."""
    registered = LlamaStore.create(tmp_path / "registered")
    with llama_stack_factory.start(registered) as stack:
        stack.register_toolgroup("mcp::one", mcp_endpoint="http://127.0.0.1:9/sse", args={"k": "v"})
    cache = TemplateCache(tmp_path / "templates")
    seeded = LlamaStore.create(tmp_path / "seeded")
    cache.apply(
        (ToolgroupSeed("mcp::one", mcp_endpoint="http://127.0.0.1:9/sse", args={"k": "v"}),),
        seeded,
    )
    theirs = {(e.key, json.dumps(e.value)) for e in read_entries(registered.kvstore_path)}
    ours = {(e.key, json.dumps(e.value)) for e in read_entries(seeded.kvstore_path)}
    assert ours == theirs
    assert next(iter(ours))[0] == f"{KEY}tool_group:mcp::one"


def test_a_template_is_built_once_per_run_and_shared(tmp_path: Path) -> None:
    """Two storages on one root, like two xdist workers: the second copies, never rebuilds."""
    seeds = TemplateCache(tmp_path).rows((ToolgroupSeed("mcp::a", mcp_endpoint="http://h/a"),))
    assert seeds is not None
    first, second = SqliteStorage(tmp_path), SqliteStorage(tmp_path)
    template = first.template(seeds)
    inode = template.stat().st_ino
    assert second.template(seeds) == template
    assert template.stat().st_ino == inode
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".db", ".lock"]
    store = LlamaStore.create(tmp_path / "s")
    second.create(store.path, seeds, None)
    assert [t.identifier for t in store.toolgroups()] == ["mcp::a"]


def test_seeding_a_store_under_a_running_stack_is_refused(
    llama_stack_factory,
    llama_store_factory,  # type: ignore[no-untyped-def]
) -> None:
    store = llama_store_factory.mktemp("live")
    with (
        llama_stack_factory.start(store),
        pytest.raises(SeedError, match="a stack is running on this store"),
    ):
        llama_store_factory.templates.apply(
            (ToolgroupSeed("mcp::late", mcp_endpoint="http://h/l"),), store
        )


def test_seeds_without_a_stack_installed_name_the_problem(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import sys
        sys.modules["llama_stack.core.store.registry"] = None
        sys.modules["ogx.core.store.registry"] = None
        """
    )
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.llama_toolgroups({"toolgroup_id": "mcp::a", "mcp_endpoint": "http://h/a"})
        def test_it(llama_store):
            pass
        """
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*seeds need a stack to take their format from*"])
    assert "Traceback" not in result.stdout.str()
