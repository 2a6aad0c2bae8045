"""Reading stores for the ``llamastate`` command: what a store is, holds, weighs, and
where stores usually are.

Only files are read, never Llama Stack imported, so this works on a CI artifact or on a
store made by another release.
"""

from __future__ import annotations

import getpass
import os
import tempfile
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

from ..state.persistent import CACHE_SUBDIR
from ..state.registry import ToolgroupRecord
from ..state.seed_rows import STATE_CACHE_SUBDIR
from ..state.store import LlamaStore, is_store

__all__ = [
    "PERSIST_DIR",
    "TEMPLATE_DIR",
    "age",
    "default_bases",
    "describe",
    "find_stores",
    "human_size",
    "marker",
    "size",
]

#: Kinds ``ls`` lists; "run" and "base" folders only hold stores, so it looks inside them.
_LISTED_KINDS = ("test", "persistent", "template")
#: The persistent stores of the project in the current folder, by pytest's default cache.
PERSIST_DIR = Path(".pytest_cache") / CACHE_SUBDIR
#: Its state templates kept by ``--llama-reuse-templates``.
TEMPLATE_DIR = Path(".pytest_cache") / STATE_CACHE_SUBDIR
#: How many of the newest ``pytest-N`` basetemps ``ls`` searches by default.
_BASETEMPS = 3


def marker(path: Path) -> tuple[str, str, float | None]:
    """Kind, label and creation time; a damaged marker gives ``("", "", None)``."""
    data = LlamaStore.read_marker(path)
    created = data.get("created")
    if isinstance(created, bool) or not isinstance(created, int | float):
        created = None
    return str(data.get("kind", "")), str(data.get("label", "")), created


def size(path: Path) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            with suppress(OSError):  # removed meanwhile
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


def human_size(size: float) -> str:
    for unit in ("B", "K", "M", "G"):
        if size < 1024:
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return f"{size:.1f}T"


def age(created: float | None, now: float) -> str:
    if created is None:
        return "?"
    seconds = max(0.0, now - created)
    for limit, unit_seconds, unit in ((60, 1, "s"), (3600, 60, "m"), (86400, 3600, "h")):
        if seconds < limit:
            return f"{int(seconds // unit_seconds)}{unit}"
    return f"{int(seconds // 86400)}d"


def default_bases() -> list[Path]:
    """Where stores usually are: this project's persistent stores and kept templates, then
    recent basetemps.

    Found the way pytest names them (``PYTEST_DEBUG_TEMPROOT`` or the temp dir, then
    ``pytest-of-<user>/pytest-<N>``), newest first.
    """
    try:
        user = getpass.getuser()
    except (ImportError, OSError, KeyError):
        user = "unknown"
    temproot = Path(os.environ.get("PYTEST_DEBUG_TEMPROOT") or tempfile.gettempdir())
    numbered = [
        (int(p.name[len("pytest-") :]), p)
        for p in (temproot / f"pytest-of-{user}").glob("pytest-*")
        if p.name[len("pytest-") :].isdigit()
    ]
    newest = [p for _, p in sorted(numbered, reverse=True)[:_BASETEMPS]]
    return [PERSIST_DIR, TEMPLATE_DIR, *newest]


def find_stores(base: Path) -> Iterator[Path]:
    """Stores of a listed kind at or under ``base``; never inside one, never via symlinks.

    A loop, not recursion: a deep tree in some test's ``tmp_path`` must not end ``ls``.
    """
    pending = [base]
    while pending:
        folder = pending.pop()
        if is_store(folder) and marker(folder)[0] in _LISTED_KINDS:
            yield folder
            continue
        try:
            children = sorted(os.scandir(folder), key=lambda e: e.name, reverse=True)
        except OSError:  # unreadable (another user's basetemp) or gone meanwhile
            continue
        pending += [Path(c.path) for c in children if c.is_dir(follow_symlinks=False)]


def describe(store: LlamaStore) -> dict[str, Any]:
    """The ``show --json`` document; the text output is rendered from it, so both agree."""
    kind, label, created = marker(store.path)
    whole_marker = LlamaStore.read_marker(store.path)
    entries = store.entries()
    toolgroups = sorted(
        (ToolgroupRecord.from_entry(e) for e in entries if e.type == "tool_group"),
        key=lambda t: t.identifier,
    )
    kv, tables = store.tables.table_counts()
    registry: dict[str, list[str]] = {}
    for entry in entries:
        registry.setdefault(entry.type, []).append(entry.identifier)
    return {
        "path": str(store.path),
        "kind": kind,
        "label": label,
        "created": created,
        "toolgroups": [
            {
                "identifier": t.identifier,
                "provider_id": t.provider_id,
                "mcp_endpoint": t.mcp_endpoint,
                "args": dict(t.args) if t.args is not None else None,
            }
            for t in toolgroups
        ],
        "registry": {t: sorted(ids) for t, ids in sorted(registry.items())},
        "kv_namespaces": kv,
        "sql_tables": tables,
        "marker": whole_marker,
    }
