"""Catch tests that write to a developer's real Llama Stack / OGX home.

Isolation that silently fails looks exactly like isolation that works, until a developer's
``~/.llama`` holds a toolgroup from the test suite. The guard compares the real homes
before and after each test and names every path that changed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .flavor import FLAVORS

__all__ = [
    "GUARD_MODES",
    "GuardMode",
    "HomeGuard",
    "LlamaStoreLeakWarning",
    "Snapshot",
    "real_state_homes",
]


class LlamaStoreLeakWarning(UserWarning):
    """A test (or a template builder) wrote to the real Llama Stack home
    (``--llama-guard=warn``)."""


GuardMode = Literal["error", "warn", "off"]
GUARD_MODES: tuple[GuardMode, ...] = ("error", "warn", "off")

#: path -> (mtime_ns, size); folders have size -1 so only their presence counts.
Snapshot = dict[str, tuple[int, int]]

_MAX_LISTED = 20


def real_state_homes(environ: Mapping[str, str]) -> list[Path]:
    """The user's real state homes; call before anything points the environment elsewhere."""
    home = Path(environ.get("HOME") or os.path.expanduser("~"))
    # Both flavors' homes, whichever is installed: the OGX CLI moves ~/.llama to ~/.ogx.
    roots = [home / flavor.home for flavor in FLAVORS]
    roots += [Path(environ[f.config_dir_var]) for f in FLAVORS if f.config_dir_var in environ]
    return list(dict.fromkeys(p.absolute() for p in roots))


def _scan(root: Path, out: Snapshot) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            out[os.path.join(dirpath, name)] = (0, -1)
        for name in filenames:
            full = os.path.join(dirpath, name)
            try:
                st = os.lstat(full)
            except OSError:
                continue
            out[full] = (st.st_mtime_ns, st.st_size)
    if root.is_dir():
        out[str(root)] = (0, -1)


@dataclass(frozen=True)
class HomeGuard:
    roots: tuple[Path, ...]

    @classmethod
    def for_roots(cls, roots: Iterable[Path]) -> HomeGuard:
        return cls(tuple(roots))

    def snapshot(self) -> Snapshot:
        out: Snapshot = {}
        for root in self.roots:
            _scan(root, out)
        return out

    @staticmethod
    def changes(before: Snapshot, after: Snapshot) -> list[str]:
        """Human-readable ``created|changed|removed: path`` lines, sorted."""
        lines = [f"created: {p}" for p in after.keys() - before.keys()]
        lines += [f"removed: {p}" for p in before.keys() - after.keys()]
        lines += [
            f"changed: {p}"
            for p in after.keys() & before.keys()
            if after[p] != before[p] and after[p][1] != -1
        ]
        return sorted(lines, key=lambda line: line.split(": ", 1)[1])

    @staticmethod
    def describe(changes: list[str]) -> str:
        listed = changes[:_MAX_LISTED]
        more = len(changes) - len(listed)
        tail = [f"  ... and {more} more"] if more else []
        return "\n".join(
            [
                "this test wrote to the real Llama Stack home, outside its isolated store:",
                *(f"  {line}" for line in listed),
                *tail,
                "Start stacks through the llama_store / llama_stack fixtures, or inside "
                "store.activate(), so their state lands in the test's store "
                "(--llama-guard=warn|off to relax this check).",
            ]
        )
