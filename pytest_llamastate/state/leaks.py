"""What a test left behind in a store it shares with other tests.

A module- or session-scoped store trades isolation for speed; the price is that a test
which registers a toolgroup or creates a conversation and does not clean up changes what
the next test sees, and the failure shows up there, far from its cause. So the state of
each shared store is read when a test starts and again when it is done, and whatever
differs is named with the test: registry rows as ``RegistryDiff`` lines, other rows (SQL
tables, non-registry keys of the kvstore) by table and first column.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .registry import RegistryEntry, RegistrySnapshot
from .store import LlamaStore

__all__ = [
    "LEAK_MODES",
    "LeakMode",
    "LlamaSharedStoreLeakWarning",
    "LlamaStoreLeakWarning",
    "StoreState",
    "describe_leak",
    "left_behind",
    "read_shared",
]


class LlamaStoreLeakWarning(UserWarning):
    """A test (or a template builder) wrote to the real Llama Stack home
    (``--llama-guard=warn``)."""


class LlamaSharedStoreLeakWarning(UserWarning):
    """A test left state behind in a store it shares with other tests (``--llama-leaks=warn``)."""


LeakMode = Literal["off", "warn", "error"]
LEAK_MODES: tuple[LeakMode, ...] = ("off", "warn", "error")

#: Row identities listed per table in a leak line; the count says how many more.
_LISTED_ROWS = 3

Row = tuple[Any, ...]


def _rows(store: LlamaStore) -> dict[str, frozenset[Row]]:
    """Every row of every table of the store but registry rows (the registry snapshot
    covers those), on whichever storage the store is."""
    tables = store.table_rows()
    if (registry := tables.get(store.registry_table)) is not None:
        tables[store.registry_table] = frozenset(
            r for r in registry if RegistryEntry.parse(str(r[0]), "") is None
        )
    return tables


@dataclass(frozen=True)
class StoreState:
    """A store's registry and rows at one moment."""

    registry: RegistrySnapshot = field(default_factory=RegistrySnapshot)
    rows: Mapping[str, frozenset[Row]] = field(default_factory=dict)

    @classmethod
    def read(cls, store: LlamaStore) -> StoreState:
        return cls(store.snapshot(), _rows(store))

    def changes(self, later: StoreState) -> list[str]:
        """What ``later`` holds that this state did not, and the reverse: one line each."""
        lines = self.registry.diff(later.registry).lines(fields=True)
        for table in sorted(self.rows.keys() | later.rows.keys()):
            before, after = self.rows.get(table, frozenset()), later.rows.get(table, frozenset())
            for sign, rows in (("+", after - before), ("-", before - after)):
                if rows:
                    ids = sorted(str(r[0]) for r in rows if r)
                    shown = ", ".join(ids[:_LISTED_ROWS])
                    more = (
                        f", ... {len(ids) - _LISTED_ROWS} more" if len(ids) > _LISTED_ROWS else ""
                    )
                    lines.append(f"{sign} {len(rows)} row(s) in {table} ({shown}{more})")
        return lines


def describe_leak(nodeid: str, store: LlamaStore, lines: list[str]) -> str:
    """The message naming the test, the shared store and what it left behind."""
    body = "\n".join(f"  {line}" for line in lines)
    return (
        f"{nodeid} changed the shared store {store.label or store.path} and did not undo it; "
        f"the next test using it sees this:\n{body}\n"
        f"store: {store.path} (clean up in the test or its fixture, use the test's own "
        "llama_store, or --llama-leaks=off)"
    )


def read_shared(
    shared: set[Path], pending: Mapping[Path, LlamaStore], into: dict[Path, StoreState]
) -> None:
    """Read each shared store still in use that ``into`` has no starting state for yet."""
    for path, store in pending.items():
        if path in shared and path not in into:
            into[path] = StoreState.read(store)


def left_behind(
    nodeid: str, start: Mapping[Path, StoreState], pending: Mapping[Path, LlamaStore]
) -> list[str]:
    """One message per shared store the test left different from how it found it."""
    found = []
    for path, before in start.items():
        if path in pending and (lines := before.changes(StoreState.read(pending[path]))):
            found.append(describe_leak(nodeid, pending[path], lines))
    return found
