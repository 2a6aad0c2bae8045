"""pytest-xdist wiring: what the controller hands its workers (the seed template folder, the
run's store folder) and what workers hand back (the stores they kept), under these keys."""

from __future__ import annotations

from typing import Any

import pytest

from .session import session_state

__all__ = ["KEPT_KEY", "RUN_DIR_KEY", "TEMPLATES_KEY", "XdistHooks"]

RUN_DIR_KEY = "llamastate_run_dir"
TEMPLATES_KEY = "llamastate_templates"
KEPT_KEY = "llamastate_kept"


class XdistHooks:
    """Registered only when pytest-xdist is installed, so its hooks are known."""

    @pytest.hookimpl
    def pytest_configure_node(self, node: Any) -> None:
        factory = session_state(node.config).factory
        node.workerinput[TEMPLATES_KEY] = str(factory.templates.root)
        if factory.base is not None:
            node.workerinput[RUN_DIR_KEY] = str(factory.base)

    @pytest.hookimpl
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        kept = getattr(node, "workeroutput", {}).get(KEPT_KEY, [])
        session_state(node.config).kept.extend((a, b, c) for a, b, c in kept)
