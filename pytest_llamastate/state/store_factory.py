"""Where stores are made, and which of them outlive the run.

Modelled on pytest's ``TempPathFactory``: one object per session makes numbered folders
under one base folder and decides retention in one place. Without ``--llama-store-dir``
the base is ``<basetemp>/llamastate`` (per xdist worker, pruned by pytest with basetemp);
with it, each run gets a numbered ``run-N`` folder of its own, of which the newest
``llama_store_retention_count`` are kept.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from filelock import FileLock

from ..storage.base import Storage
from ..storage.sqlite_backend import SqliteStorage
from .seed_rows import BuiltTemplate, TemplateCache
from .seeds import ToolgroupSeed, parse_seeds, resolve_seeds
from .store import MARKER_NAME, LlamaStore, remove_store

__all__ = ["KEEP_POLICIES", "KeepPolicy", "LlamaStoreFactory", "make_run_dir"]

KeepPolicy = Literal["failed", "all", "none"]
KEEP_POLICIES: tuple[KeepPolicy, ...] = ("failed", "all", "none")

_RUN_PREFIX = "run-"


def _safe_name(name: str) -> str:
    return re.sub(r"\W", "_", name)[:30] or "store"


def make_run_dir(root: Path, keep: int) -> Path:
    """Create ``root/run-N`` for this run and prune the oldest marked runs beyond ``keep``.

    Numbering and pruning happen under a file lock, so two sessions sharing ``root`` never
    get the same folder nor delete each other's newest one.
    """
    with FileLock(str(root / ".llamastate.lock")):
        numbers = sorted(
            int(p.name[len(_RUN_PREFIX) :])
            for p in root.glob(f"{_RUN_PREFIX}*")
            if p.name[len(_RUN_PREFIX) :].isdigit()
        )
        run_dir = root / f"{_RUN_PREFIX}{(numbers[-1] + 1) if numbers else 0}"
        LlamaStore.create(run_dir, kind="run")
        for number in numbers[: max(0, len(numbers) + 1 - keep)]:
            remove_store(root / f"{_RUN_PREFIX}{number}", best_effort=True)
    return run_dir


class _Reaper:
    """Deletes released stores on a background thread.

    Unlinking a store's files is disk I/O the next test need not wait for; the thread
    releases the GIL while it waits on the disk, and ``join`` at session end makes sure
    every removal is done before the run reports. The thread starts on first use, so a
    run that keeps everything starts none.
    """

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None

    def put(self, store: LlamaStore, storage: Storage) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="llamastate-reaper")
        self._pool.submit(storage.drop, store.tables)
        self._pool.submit(remove_store, store.path, best_effort=True)

    def join(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


@dataclass
class LlamaStoreFactory:
    """Makes stores for any scope; ``llama_store`` uses it, and so can your own fixtures.

    For a module- or session-scoped store::

        @pytest.fixture(scope="module")
        def shared_store(llama_store_factory):
            store = llama_store_factory.mktemp("shared")
            with store.activate():
                yield store
    """

    keep_policy: KeepPolicy
    templates: TemplateCache
    base: Path | None = None
    #: Where stores' tables live (default: SQLite files in their folders).
    storage: Storage = None  # type: ignore[assignment]
    _default_base: Callable[[], Path] | None = field(default=None, repr=False)
    _base_ready: bool = field(default=False, repr=False)
    _counts: dict[str, int] = field(default_factory=dict, repr=False)
    _pending: dict[Path, LlamaStore] = field(default_factory=dict, repr=False)
    _reaper: _Reaper = field(default_factory=_Reaper, repr=False)

    def __post_init__(self) -> None:
        if self.storage is None:
            self.storage = SqliteStorage(self.templates.root)

    def getbasedir(self) -> Path:
        """The folder this process makes its stores in, created on first use."""
        if self.base is None:
            if self._default_base is None:
                raise RuntimeError("llama_store_factory has no base folder yet")
            self.base = self._default_base()
        if not self._base_ready:
            if not self.base.exists():
                LlamaStore.create(self.base, kind="base")
            self._base_ready = True
        return self.base

    def set_default_base(self, getter: Callable[[], Path]) -> None:
        """Where stores go without ``--llama-store-dir``; resolved on first use."""
        self._default_base = getter

    def mktemp(
        self,
        basename: str,
        *,
        label: str | None = None,
        kind: str = "test",
        seeds: Iterable[ToolgroupSeed | object] = (),
        template: BuiltTemplate | None = None,
    ) -> LlamaStore:
        """A new store ``<base>/<basename><n>``; ``basename`` is made filesystem-safe.

        ``label`` (default: ``basename``) is recorded in the store, e.g. the test id.
        It starts as a copy of ``template`` (recorded in its marker by name), then
        ``seeds`` (``ToolgroupSeed``, mappings, ids or ``mcp_tools(...)``) are added to its
        registry; an ``mcp_tools`` seed's server is started now.
        """
        parsed = resolve_seeds(parse_seeds(seeds, f"seeds of {label or basename}"))
        name = _safe_name(basename)
        number = self._counts.get(name, 0)
        origin = {"template": template.name} if template is not None else {}
        while True:
            try:
                store = LlamaStore.create(
                    self.getbasedir() / f"{name}{number}",
                    label=label or basename,
                    kind=kind,
                    **origin,
                )
            except FileExistsError:
                number += 1
            else:
                break
        self._counts[name] = number + 1
        try:
            copy = None
            if template is not None:
                template.copy_into(store)
                copy = template.state_copy()
            tables = self.storage.create(store.path, self.templates.rows(parsed), copy)
            store = store.on(tables, seeds=parsed, template=template.name if template else "")
        except BaseException as exc:  # half made (a full disk): nothing in it yet, free it
            remove_store(store.path, best_effort=True)
            if isinstance(exc, OSError) and exc.filename is None:
                exc.filename = str(store.path)  # a write error names no file
            raise
        self._pending[store.path] = store
        return store

    def pending(self) -> dict[Path, LlamaStore]:
        """The stores made and not yet released (a test's own, or a fixture's shared one)."""
        return dict(self._pending)

    def keeps(self, failed: bool) -> bool:
        """The one place the keep policy is decided."""
        return self.keep_policy == "all" or (self.keep_policy == "failed" and failed)

    def release(self, store: LlamaStore, *, failed: bool) -> bool:
        """Keep or remove a store whose user is done with it; return whether it was kept."""
        self._pending.pop(store.path, None)
        if self.keeps(failed):
            self.storage.keep(store.tables)
            return True
        self._reaper.put(store, self.storage)
        return False

    def finish(self, *, failed: bool) -> list[LlamaStore]:
        """Release what is left at session end (module/session stores, interrupted tests).

        Returns the stores kept. The base folder goes too when nothing is left in it.
        """
        kept = [s for s in list(self._pending.values()) if self.release(s, failed=failed)]
        self._reaper.join()
        if self.base is not None and self.base.is_dir():
            leftovers = [p for p in self.base.iterdir() if p.name != MARKER_NAME]
            if not leftovers:
                remove_store(self.base, best_effort=True)
        return kept
