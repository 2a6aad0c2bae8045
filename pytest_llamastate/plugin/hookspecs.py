"""Hooks other plugins and ``conftest.py`` files can implement to take part in a store's life.

Called in this order for a test that uses ``llama_stack``:
``pytest_llamastate_seeds`` -> ``pytest_llamastate_store_created`` ->
``pytest_llamastate_stack_config`` -> (test) -> ``pytest_llamastate_store_released``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ..state.seeds import Seed
    from ..state.store import LlamaStore


@pytest.hookspec
def pytest_llamastate_seeds(seeds: list[Seed], request: pytest.FixtureRequest) -> None:
    """Change the toolgroups a test's store starts with, by editing ``seeds`` in place.

    Runs before the store is made (for a persistent store: before it is created or
    checked against its fingerprint). Items may be ``ToolgroupSeed``, ``mcp_tools(...)``
    or mappings::

        def pytest_llamastate_seeds(seeds, request):
            if request.node.get_closest_marker("needs_weather"):
                seeds.append({"toolgroup_id": "mcp::weather", "mcp_endpoint": WEATHER_URL})
    """


@pytest.hookspec
def pytest_llamastate_store_created(store: LlamaStore, request: pytest.FixtureRequest) -> None:
    """A test's store exists, with its seeds, and is about to become active::

    def pytest_llamastate_store_created(store, request):
        (store.path / "files").mkdir()
    """


@pytest.hookspec
def pytest_llamastate_stack_config(
    config: dict[str, Any], store: LlamaStore, request: pytest.FixtureRequest
) -> None:
    """Change the run config a test's stack starts with, by editing ``config`` in place.

    ``config`` is the parsed YAML; the result is written to ``<store>/stack.yaml`` and
    checked like any config (every path it writes must stay inside the store)::

        def pytest_llamastate_stack_config(config, store, request):
            config["providers"]["tool_runtime"].append(
                {"provider_id": "rag", "provider_type": "inline::rag-runtime", "config": {}}
            )
    """


@pytest.hookspec
def pytest_llamastate_store_released(store: LlamaStore, kept: bool, nodeid: str) -> None:
    """A test's store is done with: ``kept`` tells whether it stays on disk.

    Called after the keep policy is applied (for a persistent store, after its integrity
    check; ``kept`` is then always true)::

        def pytest_llamastate_store_released(store, kept, nodeid):
            if kept:
                print(f"{nodeid}: see llamastate show {store.path}")
    """
