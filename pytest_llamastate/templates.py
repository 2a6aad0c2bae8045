"""Seed templates: each distinct seed set built once per run, copied into every store.

Llama Stack 0.7 has no API that registers a toolgroup ahead of a stack (the routes were
removed, and ``tool_groups:`` in a run config is emptied by a validator), so seeds become
registry rows, written the way the installed stack writes them. Each distinct seed set is
built once into a template database and copied per test, like pytest-postgresql's
template databases: a copy costs a file copy, not a stack start.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock

from . import live
from .flavor import Flavor, detect
from .registry import RegistryFormat, installed_format, write_entries
from .seeds import SeedError, ToolgroupSeed, seed_set_key
from .sqlite import checkpoint
from .stackconfig import StackConfig
from .store import LlamaStore

__all__ = ["TemplateCache", "seed_rows"]


def seed_rows(seeds: Iterable[ToolgroupSeed], fmt: RegistryFormat) -> dict[str, str]:
    """The registry rows that hold ``seeds``, keyed and shaped as ``fmt`` says."""
    return dict(
        fmt.toolgroup_row(s.toolgroup_id, str(s.provider_id), s.mcp_endpoint, s.args) for s in seeds
    )


@dataclass
class TemplateCache:
    """One template ``kvstore.db`` per distinct seed set, shared by every xdist worker.

    ``root`` is chosen by the controller and handed to the workers; it is created on the
    first template built, so runs without seeds touch nothing. Rows are written in the
    format of ``flavor`` (default: detected) for the metadata namespace of ``config``
    (OGX only reads keys under it); the config is read when the first template is built.
    """

    root: Path
    flavor: Flavor | None = None
    config: Path | None = None
    #: Whether stores are on Postgres, whose kv tables prefix keys in every flavor.
    postgres: bool = False
    _format: RegistryFormat | None = field(default=None, repr=False)
    _built: dict[str, Path] = field(default_factory=dict, repr=False)

    @classmethod
    def new_root(cls) -> Path:
        return Path(tempfile.gettempdir()) / f"pytest-llamastate-templates-{uuid.uuid4().hex[:12]}"

    @property
    def format(self) -> RegistryFormat:
        """How seed rows are written: the installed stack's format, with the namespace."""
        if self._format is None:
            flavor = self.flavor or detect()
            namespace = None
            if self.config is not None and (flavor.namespaced_keys or self.postgres):
                namespace = StackConfig.load(self.config).metadata_namespace
            try:
                self._format = installed_format(flavor, namespace, postgres=self.postgres)
            except ModuleNotFoundError as exc:
                raise SeedError(f"seeds need a stack to take their format from: {exc}") from None
        return self._format

    def template(self, seeds: tuple[ToolgroupSeed, ...]) -> Path:
        """The template database for ``seeds``, built on first use (once per run, locked)."""
        fmt = self.format
        # Everything that shapes the rows names the file: workers never share a wrong one.
        shape = re.sub(r"\W", "_", f"{fmt.package}-{fmt.version}-{fmt.namespace or ''}")
        key = f"{shape}-{seed_set_key(seeds)}"
        if key in self._built:
            return self._built[key]
        db = self.root / f"{key}.db"
        self.root.mkdir(mode=0o700, exist_ok=True)
        with FileLock(str(self.root / f"{key}.lock")):
            if not db.exists():
                partial = db.with_suffix(".partial")
                partial.unlink(missing_ok=True)
                write_entries(partial, seed_rows(seeds, fmt))
                checkpoint(partial, journal_delete=True)
                partial.rename(db)
        self._built[key] = db
        return db

    def apply(self, seeds: tuple[ToolgroupSeed, ...], store: LlamaStore) -> None:
        """Put ``seeds`` into a store: a copy of the template when it has no registry yet.

        Refused while a stack runs on the store: its registry caches what it read, so
        rows written under it would not be seen (or would be overwritten).
        """
        if not seeds:
            return
        if (stack := live.on(store.path)) is not None:
            raise SeedError(
                f"{store.path}: a stack is running on this store "
                f"({stack.label or 'no label'}); seed it before the stack starts"
            )
        if store.database is None and not store.kvstore_path.exists():
            shutil.copyfile(self.template(seeds), store.kvstore_path)
            return
        store.write_registry(seed_rows(seeds, self.format))

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
