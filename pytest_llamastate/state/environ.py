"""Changing ``os.environ`` for a while and putting back exactly what was there.

Three things in the plugin point variables somewhere for a while (a store's state roots,
the variables unset while a stack starts, the marker that tells a library stack it runs
under a test runner); "exactly" means a variable that was unset is unset again, not set
to an empty string, so they all go through here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

__all__ = ["Saved", "patched", "restore", "save", "settle"]

#: A variable's value before a change; ``None``: it was unset.
Saved = dict[str, str | None]


def save(names: Iterable[str]) -> Saved:
    return {name: os.environ.get(name) for name in names}


def restore(saved: Saved) -> None:
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@contextmanager
def patched(values: Mapping[str, str] | None = None, unset: Iterable[str] = ()) -> Iterator[None]:
    """Set ``values`` and unset ``unset`` until the block ends, then restore each exactly."""
    values = dict(values or {})
    saved = save([*values, *unset])
    os.environ.update(values)
    for name in unset:
        os.environ.pop(name, None)
    try:
        yield
    finally:
        restore(saved)


def settle(activations: list[tuple[dict[str, str], Saved]]) -> None:
    """Put back each variable an activation set that still has the value it set.

    ``llama_store`` restores the environment when it ends, but a ``monkeypatch`` set up
    before it ends after it, and puts back the value it saw: the store's. Whatever the
    order of fixtures, a variable still naming the store now gets the value it had before
    the store was activated; one set to anything else was set on purpose. ``activations``
    are (what was set, what was there before), oldest first.
    """
    for values, before in reversed(activations):
        restore({n: v for n, v in before.items() if os.environ.get(n) == values[n]})
