"""Persistent stores: state that survives tests and runs, for soak and stability tests.

Run `make demo` twice: the second run finds the first run's toolgroups still there.
`pytest --llama-reset-persistent=demo-soak` (or `llamastate reset demo-soak`) starts over.
"""

import pytest

from pytest_llamastate import restart_cycles


@pytest.mark.persistent("demo-soak")
def test_registrations_survive_restarts(llama_stack):
    before = {tg.identifier for tg in llama_stack.toolgroups()}

    def register_one_more(stack, cycle):
        stack.register_toolgroup(
            f"mcp::soak-{len(before)}-{cycle}", mcp_endpoint="http://127.0.0.1:9/x"
        )

    # Five restarts; after each, every toolgroup registered so far must still be listed.
    listed = restart_cycles(llama_stack, 5, before_restart=register_one_more)
    assert before < listed


@pytest.mark.persistent("demo-soak")
def test_the_next_test_sees_the_same_store(llama_store):
    assert len(llama_store.toolgroups()) >= 6
