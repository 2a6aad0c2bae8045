"""Which stacks run in this process: the one registry every part of the plugin asks.

Seeding a store a stack runs on, starting a second library stack, closing what a test
left running at session end: each needs to know what is live, and a handle registers
itself here when it starts and leaves when it stops. A leaf module, so the layers below
the stack (templates, persistence) can ask without importing it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

__all__ = ["LiveStack", "add", "library", "on", "remove", "running"]


class LiveStack(Protocol):
    """What the registry needs of a stack handle."""

    @property
    def label(self) -> str: ...
    @property
    def mode(self) -> str: ...
    def close(self) -> None: ...


_live: dict[Path, LiveStack] = {}


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
