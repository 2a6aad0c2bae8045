"""Which stacks run in this process: the one registry every part of the plugin asks.

Seeding a store a stack runs on, starting a second library stack, closing what a test
left running at session end: each needs to know what is live, and a handle registers
itself here when it starts and leaves when it stops. A leaf module, so the layers below
the stack (templates, persistence) can ask without importing it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

__all__ = ["LiveStack", "add", "check_start", "library", "on", "only", "remove", "running"]


class LiveStack(Protocol):
    """What the registry needs of a stack handle."""

    @property
    def label(self) -> str: ...
    @property
    def mode(self) -> str: ...
    def close(self) -> None: ...


_live: dict[Path, LiveStack] = {}
#: While set, the one store a stack may start on, and who decided so (a template build).
_only: tuple[Path, str] | None = None


@contextmanager
def only(store_path: Path, why: str) -> Iterator[None]:
    """Refuse stacks on any store but ``store_path`` until the block ends.

    A template builder is given the stack its state must land in; a stack it starts
    itself writes somewhere the template never sees.
    """
    global _only
    before, _only = _only, (store_path, why)
    try:
        yield
    finally:
        _only = before


def check_start(store_path: Path) -> None:
    """Raise ``RuntimeError`` when a stack may not start on ``store_path`` now."""
    if _only is not None and store_path != _only[0]:
        raise RuntimeError(
            f"{_only[1]} started a stack of its own (on {store_path}); it must use the "
            "stack it is given, whose store becomes the template"
        )


def add(store_path: Path, stack: LiveStack) -> None:
    _live[store_path] = stack


def remove(store_path: Path) -> None:
    _live.pop(store_path, None)


def on(store_path: Path) -> LiveStack | None:
    """The stack of this process running on ``store_path``, if any."""
    return _live.get(store_path)


def library() -> tuple[Path, LiveStack] | None:
    """The library-mode stack of this process, if one runs (there is at most one)."""
    return next(((p, s) for p, s in _live.items() if s.mode == "library"), None)


def running() -> list[LiveStack]:
    return list(_live.values())
