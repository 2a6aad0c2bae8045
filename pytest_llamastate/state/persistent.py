"""Named persistent stores: state that deliberately survives tests and runs.

Soak and stability tests need what production has, registrations that outlive restarts,
without the accidents of a hand-managed folder: so a persistent store is opt-in and
named, reset on request, rebuilt when what made it changes (llama-stack version, stack
config, seeds: registry keys went v9 -> v10 with no migration), checked for integrity
when released, and used by one test at a time across pytest-xdist workers.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from filelock import FileLock, Timeout

from ..storage.base import Storage
from .seed_rows import TemplateCache
from .seeds import Seed, ToolgroupSeed, seed_set_key
from .store import LlamaStore, is_store, remove_store

__all__ = [
    "CACHE_SUBDIR",
    "PersistentStoreError",
    "PersistentStores",
    "Status",
    "check_name",
    "fingerprint",
]

Status = Literal["created", "reused", "reset", "rebuilt"]

#: Where persistent stores live inside pytest's cache folder: ``Cache.mkdir()`` puts
#: folders under ``d/``, and ``--cache-clear`` wipes ``d/``, so it resets them too.
CACHE_SUBDIR = Path("d") / "llamastate"

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


class PersistentStoreError(RuntimeError):
    """A persistent store cannot be used; the message names it and the reset command."""


def check_name(name: object) -> str:
    """A store name is one plain folder name: no separators, no ``..``, not empty."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise ValueError(
            f"invalid persistent store name {name!r}: use letters, digits, '_', '-' and '.' "
            "(no path separators, no '..', not empty)"
        )
    return name


def fingerprint(stack_versions: str, config_text: str, seeds: tuple[Seed, ...]) -> str:
    """What a store's contents depend on; a change means the old contents may not load.

    Lazy seeds count by what they stand for (``mcp_tools``: the functions), not by the
    URL of this session's server: a new port must not rebuild a soak test's store.
    """
    material = json.dumps([stack_versions, config_text, seed_set_key(seeds)])
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def _reset_hint(name: str) -> str:
    return f"reset it with: pytest --llama-reset-persistent={name}  (or: llamastate reset {name})"


@dataclass
class Lease:
    """One test's hold on a persistent store; ``release()`` checks it and lets go."""

    name: str
    store: LlamaStore
    status: Status
    lock: FileLock = field(repr=False)

    def release(self) -> None:
        """Unlock the store, then raise if it is no longer a sound database."""
        try:
            problems = self.store.integrity_problems()
        finally:
            self.lock.release()
        if problems:
            raise PersistentStoreError(
                f"persistent store {self.name!r} failed its integrity check:\n  "
                + "\n  ".join(problems)
                + f"\n{_reset_hint(self.name)}"
            )


@dataclass
class PersistentStores:
    """The persistent stores under one folder (default ``<pytest cache>/d/llamastate``).

    ``reset`` names the stores to wipe before their first use in this run (``"*"``: all);
    ``run_id`` is shared by every xdist worker of a run, so a store is reset once per
    run, not once per worker.
    """

    root: Path
    run_id: str
    #: Where each store's tables live.
    storage: Storage
    reset: frozenset[str] = frozenset()
    lock_timeout: float = 600.0

    def path(self, name: str) -> Path:
        return self.root / check_name(name)

    def acquire(
        self,
        name: str,
        *,
        fingerprint: str,
        seeds: tuple[ToolgroupSeed, ...],
        templates: TemplateCache,
        refresh: tuple[ToolgroupSeed, ...] = (),
    ) -> Lease:
        """Lock the store for one test, creating, resetting or rebuilding it first.

        ``refresh`` are seeds whose rows change from session to session (``mcp_tools``:
        its server's URL): a reused store's rows for them are rewritten, unless a test
        has since removed the toolgroup.

        The lock is an OS file lock: a worker killed with SIGKILL drops it with its
        process, so a crashed run never blocks the next one.
        """
        path = self.path(name)
        self.root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.root / f"{name}.lock"))
        try:
            lock.acquire(timeout=self.lock_timeout)
        except Timeout:
            raise PersistentStoreError(
                f"persistent store {name!r} ({path}) stayed locked by another test for "
                f"{self.lock_timeout:g}s (llama_persist_lock_timeout)"
            ) from None
        try:
            status = self._prepare(name, path, fingerprint)
            tables, made = self.storage.persistent(
                path, name, fresh=status != "reused", seeds=templates.rows(seeds)
            )
            store = LlamaStore(path, name, seeds, kind="persistent").on(tables)
            if not made and refresh:
                present = {tg.identifier for tg in store.toolgroups()}
                templates.apply(tuple(s for s in refresh if s.toolgroup_id in present), store)
        except BaseException:
            lock.release()
            raise
        return Lease(name, store, status, lock)

    def _prepare(self, name: str, path: Path, fingerprint: str) -> Status:
        status: Status = "created"
        if path.exists():
            if not is_store(path):
                raise PersistentStoreError(
                    f"{path} exists but is not a pytest-llamastate store; move it away or "
                    "choose another name (it is never deleted for you)"
                )
            marker = LlamaStore.read_marker(path)
            if ("*" in self.reset or name in self.reset) and marker.get("reset_run") != self.run_id:
                status = "reset"
            elif marker.get("fingerprint") != fingerprint:
                status = "rebuilt"
            else:
                problems = LlamaStore(path).integrity_problems()
                if problems:
                    raise PersistentStoreError(
                        f"persistent store {name!r} is corrupt:\n  "
                        + "\n  ".join(problems)
                        + f"\n{_reset_hint(name)}"
                    )
                return "reused"
            remove_store(path)
        extra = {"fingerprint": fingerprint}
        if "*" in self.reset or name in self.reset:
            extra["reset_run"] = self.run_id  # made in this run: no second reset
        LlamaStore.create(path, label=name, kind="persistent", **extra)
        return status
