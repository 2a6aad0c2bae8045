"""What a failing test's report says about its state: no pytest here, only text.

A failure in a test that uses a store is often a state problem (a toolgroup left by an
earlier step, one missing from the seeds), so the report says where the store is, what is
in it, what the test changed, and how to look at it after the run.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..stack.server import log_tail
from ..state.persistent import Lease
from ..state.registry import RegistrySnapshot, StoreCorruptError
from ..state.store import LlamaStore
from ..storage.base import StorageError

__all__ = [
    "basetemp_note",
    "describe_store",
    "kept_entry",
    "kept_lines",
    "persistent_lines",
    "server_log_section",
    "template_lines",
]


def describe_store(
    store: LlamaStore, initial: RegistrySnapshot | None, lease: Lease | None = None
) -> str:
    """Where the store is, its toolgroups, the registry changes since ``initial``."""
    what = f" (persistent store {lease.name!r}, {lease.status})" if lease is not None else ""
    lines = [f"state of this test: {store.path}{what}"]
    if store.template:
        lines.append(f"started from template: {store.template}")
    try:
        toolgroups = ", ".join(t.identifier for t in store.toolgroups()) or "none"
        changes = (initial or RegistrySnapshot()).diff(store.snapshot())
    except (StoreCorruptError, StorageError) as exc:
        lines.append(f"registry unreadable: {exc}")
    else:
        lines.append(f"toolgroups: {toolgroups}")
        lines.append("registry changes in this test:" if changes else str(changes))
        lines += [f"  {line}" for line in changes.lines()]
    lines.append(f"inspect: llamastate show {store.path}")
    if store.tables.open_hint:
        lines.append(f"database: {store.tables.open_hint}")
    return "\n".join(lines)


def server_log_section(log_path: Path) -> tuple[str, str]:
    """A report section with the tail of a server's log (of its latest start)."""
    return f"llama stack server log ({log_path})", log_tail(log_path)


def kept_entry(store: LlamaStore) -> tuple[str, str]:
    """A kept store for the summary: its folder, and how to open its database."""
    return str(store.path), store.tables.open_hint


def kept_lines(kept: list[tuple[str, str, str]], note: str | None) -> list[str]:
    """The "llama stores kept" section: ``label: path`` lines (tools read them), each
    store's ``psql`` command under it, and a closing note after a blank line."""
    lines = []
    for label, path, psql in kept:
        lines.append(f"{label}: {path}")
        if psql:
            lines.append(f"  {psql}")
    return lines + (["", note] if note else [])


def basetemp_note(basetemp_given: bool, retention_count: str) -> str:
    """Kept stores without ``--llama-store-dir`` live in pytest's basetemp, which pytest
    prunes: a developer reading a failure tomorrow should know the folder may be gone."""
    if basetemp_given:
        fate = "pytest empties --basetemp at the start of every run that passes it"
    else:
        fate = (
            f"pytest keeps the basetemp of the last {retention_count} runs "
            "(tmp_path_retention_count)"
        )
    return (
        f"note: these stores are under pytest's basetemp and vanish with it: {fate}. "
        "Keep them elsewhere with --llama-store-dir DIR."
    )


def persistent_lines(uses: dict[tuple[str, str], list[str]]) -> list[str]:
    """One line per persistent store: what happened to it first, and how many used it."""
    lines = []
    for (name, path), statuses in sorted(uses.items()):
        first = next((s for s in statuses if s != "reused"), "reused")
        lines.append(f"{name}: {path} ({first}, used by {len(statuses)} test(s))")
    return lines


def template_lines(events: Iterable[Sequence[Any]]) -> list[str]:
    """One summary line per template: how it was had in this run (a build, with why,
    wins over the reuses other processes report) and by how many processes."""
    by_name: dict[str, list[Sequence[Any]]] = {}
    for event in events:
        by_name.setdefault(str(event[0]), []).append(event)
    lines = []
    for name, got in sorted(by_name.items()):
        _, path, status, reason, seconds = next((e for e in got if e[2] != "reused"), got[0])
        how = f"{status} in {float(seconds):.2f}s" if status != "reused" else "reused"
        lines.append(f"{name}: {how}{f' ({reason})' if reason else ''}: {path}")
    return lines
