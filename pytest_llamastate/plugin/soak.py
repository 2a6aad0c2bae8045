"""Soak helpers: prove that registrations survive many restarts of a stack.

A single restart test passes on a store that loses state under load or over time; what
catches that is many cycles with a check after each, which is this loop.
"""

from __future__ import annotations

from collections.abc import Callable

from ..stack import LlamaStack

__all__ = ["restart_cycles"]


def restart_cycles(
    stack: LlamaStack,
    cycles: int,
    *,
    before_restart: Callable[[LlamaStack, int], None] | None = None,
) -> set[str]:
    """Restart ``stack`` ``cycles`` times; after each, every toolgroup seen so far must be listed.

    ``before_restart(stack, cycle)`` runs before each restart, e.g. to register one more
    toolgroup. Raises ``AssertionError`` naming the cycle and the toolgroups that went
    missing. Returns every toolgroup id checked (all of them listed after the last restart).
    """
    expected = {tg.identifier for tg in stack.toolgroups()}
    for cycle in range(cycles):
        if before_restart is not None:
            before_restart(stack, cycle)
        expected |= {tg.identifier for tg in stack.toolgroups()}
        stack.restart()
        listed = {tg.identifier for tg in stack.toolgroups()}
        missing = expected - listed
        if missing:
            raise AssertionError(
                f"after restart {cycle + 1} of {cycles} on {stack.store.path}, "
                f"{len(missing)} toolgroup(s) are gone: {', '.join(sorted(missing))}"
            )
    return expected
