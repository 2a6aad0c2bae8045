"""One test's ``llama_stack`` started: the fixture only says when, and stops it after."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from ..stack import LlamaStack, LlamaStackFactory, StackError
from ..state.stackconfig import StackConfig, StackConfigError
from ..state.store import LlamaStore
from .fixture_errors import as_test_error
from .session import item_state

__all__ = ["start_stack"]


def start_stack(
    request: pytest.FixtureRequest,
    store: LlamaStore,
    factory: LlamaStackFactory,
    config: Path | str | StackConfig,
) -> LlamaStack:
    """The test's stack on its store, on the run config as the
    ``pytest_llamastate_stack_config`` hook leaves it. A start that fails is the test's
    error, with the server's log attached to its report."""
    istate = item_state(request.node)
    try:
        with as_test_error(
            StackError, StackConfigError, doing="llama_stack: cannot start", about=store.path
        ):
            parsed = config if isinstance(config, StackConfig) else factory.load_config(config)
            data = copy.deepcopy(dict(parsed.data))
            request.node.ihook.pytest_llamastate_stack_config(
                config=data, store=store, request=request
            )
            stack = factory.start(
                store, config=parsed.replace_data(data), label=request.node.nodeid
            )
    except pytest.fail.Exception:
        if store.log_path.is_file():
            istate.failed_logs.append(store.log_path)
        raise
    istate.stacks.append(stack)
    return stack
