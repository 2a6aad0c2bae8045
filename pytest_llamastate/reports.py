"""What a failing test's report says about its state: no pytest here, only text.

A failure in a test that uses a store is often a state problem (a toolgroup left by an
earlier step, one missing from the seeds), so the report says where the store is, what is
in it, what the test changed, and how to look at it after the run.
"""

from __future__ import annotations

from pathlib import Path

from .persistence import Lease
from .registry import RegistrySnapshot, StoreCorruptError
from .stack.server import log_tail
from .store import LlamaStore

__all__ = ["describe_store", "server_log_section"]


def describe_store(
    store: LlamaStore, initial: RegistrySnapshot | None, lease: Lease | None = None
) -> str:
    """Where the store is, its toolgroups, the registry changes since ``initial``."""
    what = f" (persistent store {lease.name!r}, {lease.status})" if lease is not None else ""
    lines = [f"state of this test: {store.path}{what}"]
    try:
        toolgroups = ", ".join(t.identifier for t in store.toolgroups()) or "none"
        changes = (initial or RegistrySnapshot()).diff(store.snapshot())
    except StoreCorruptError as exc:
        lines.append(f"registry unreadable: {exc}")
    else:
        lines.append(f"toolgroups: {toolgroups}")
        lines.append("registry changes in this test:" if changes else str(changes))
        lines += [f"  {line}" for line in changes.lines()]
    lines.append(f"inspect: llamastate show {store.path}")
    if store.database is not None:
        lines.append(f"database: {store.database.psql}")
    return "\n".join(lines)


def server_log_section(log_path: Path) -> tuple[str, str]:
    """A report section with the tail of a server's log (of its latest start)."""
    return f"llama stack server log ({log_path})", log_tail(log_path)
