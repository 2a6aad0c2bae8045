"""One test's ``llama_store``, from its plan to its release, as an object whose methods each
do one step; the fixture only says when (pytest's ``tmp_path`` over ``TempPathFactory``).

The plan comes from what collection parsed into ``item.stash`` (``markers``): the
persistent store's name and the state template; the seeds are the ``llama_toolgroups``
fixture's, as the ``pytest_llamastate_seeds`` hook leaves them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ..releases import installed_versions
from ..stack.state_templates import TemplateError
from ..state import environ
from ..state.persistent import Lease, PersistentStoreError, fingerprint
from ..state.registry import RegistrySnapshot, StoreCorruptError
from ..state.seed_rows import BuiltTemplate
from ..state.seeds import LazySeed, Seed, SeedError, parse_seeds, resolve_seeds
from ..state.stackconfig import StackConfig, StackConfigError
from ..state.store import LlamaStore
from ..state.store_factory import LlamaStoreFactory
from ..storage.base import StorageError
from .fixture_errors import as_test_error
from .session import ItemState, item_state, persistent_key, session_state, template_key

__all__ = ["StoreSetup"]

#: What making or opening a test's store may raise that is the test's problem, not ours.
_OPEN_ERRORS = (
    SeedError,
    PersistentStoreError,
    StorageError,
    TemplateError,
    StackConfigError,
    StoreCorruptError,
)


@dataclass
class StoreSetup:
    """The store of one test: a fresh one (a copy of its state template, if marked) or,
    under ``@pytest.mark.persistent``, a lease on the named persistent store."""

    request: pytest.FixtureRequest
    factory: LlamaStoreFactory
    #: The ``llama_toolgroups`` fixture's seeds.
    toolgroups: list[Seed]
    #: The run config the test's stack runs: what a template is built on and a
    #: persistent store's fingerprint covers.
    config: Path | str | StackConfig
    #: The ``persistent`` marker's store name; ``None`` for a fresh store.
    persistent: str | None = field(init=False)
    lease: Lease | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.persistent = self.request.node.stash.get(persistent_key, None)

    @property
    def _item(self) -> ItemState:
        return item_state(self.request.node)

    @property
    def _hook(self) -> Any:
        return self.request.node.ihook

    @contextmanager
    def active(self) -> Iterator[LlamaStore]:
        """The test's store, made or leased, pointed at by the environment while the test
        runs; a lease is checked and let go after."""
        store = self.open()
        try:
            self.remember(store)
            self._hook.pytest_llamastate_store_created(store=store, request=self.request)
            with self.activate(store):
                yield store
        finally:
            self.release(store)

    def open(self) -> LlamaStore:
        """A fresh store or the persistent one; what goes wrong is the test's error."""
        doing = (
            "make the test's store"
            if self.persistent is None
            else f"open persistent store {self.persistent!r}"
        )
        with as_test_error(*_OPEN_ERRORS, doing=f"llama_store: cannot {doing}"):
            seeds = self.seeds()
            if self.persistent is None:
                store = self.make(seeds)
            else:
                store = self.acquire(self.persistent, seeds)
        return store

    def seeds(self) -> tuple[Seed, ...]:
        """The fixture's seeds, as the ``pytest_llamastate_seeds`` hook leaves them."""
        wanted = list(self.toolgroups)
        self._hook.pytest_llamastate_seeds(seeds=wanted, request=self.request)
        return parse_seeds(wanted, "llama_toolgroups")

    def make(self, seeds: tuple[Seed, ...]) -> LlamaStore:
        """A fresh store holding the seeds (and the template's state), released by the
        keep policy once the test is reported."""
        node = self.request.node
        store = self.factory.mktemp(
            node.name, label=node.nodeid, seeds=seeds, template=self.template()
        )
        self._item.stores.append(store)
        return store

    def template(self) -> BuiltTemplate | None:
        """The template of the test's ``llama_template`` marker, built on first use (on the
        config the test's stack runs, before that stack starts: one library stack per
        process)."""
        template = self.request.node.stash.get(template_key, None)
        if template is None:
            return None
        state = session_state(self.request.config)
        config = self.config
        parsed = config if isinstance(config, StackConfig) else state.stacks.load_config(config)
        try:
            built, event = state.state_templates.get(template, parsed, self.request.node.nodeid)
        finally:
            # A build's writes to the real homes were judged by the build's own guard check.
            if state.guard is not None:
                self._item.guard_mark = state.guard.begin()
        if event is not None:
            self._item.templates.append(event)
        return built

    def acquire(self, name: str, seeds: tuple[Seed, ...]) -> LlamaStore:
        """This test's lease on the named persistent store, rebuilt when what made it
        (versions, config, seeds) changed."""
        self.lease = session_state(self.request.config).persistent.acquire(
            name,
            fingerprint=fingerprint(installed_versions(), self._config_text(), seeds),
            seeds=resolve_seeds(seeds),
            templates=self.factory.templates,
            refresh=resolve_seeds(s for s in seeds if isinstance(s, LazySeed)),
        )
        self._item.leases.append(self.lease)
        return self.lease.store

    def _config_text(self) -> str:
        if isinstance(self.config, StackConfig):
            return self.config.text
        try:
            return Path(self.config).read_text(encoding="utf-8")
        except OSError:
            return str(self.config)

    def remember(self, store: LlamaStore) -> None:
        """Where the registry started, for the failure report of what the test changed
        (an empty store starts empty: nothing to read)."""
        with as_test_error(StoreCorruptError):
            self._item.initial[store.path] = (
                store.snapshot()
                if self.lease is not None or store.seeds or store.template
                else RegistrySnapshot()
            )

    @contextmanager
    def activate(self, store: LlamaStore) -> Iterator[None]:
        """The environment points at the store; what it was before is recorded for the
        last word after every fixture's teardown (``environ.settle``)."""
        self._item.activations.append((dict(store.env), environ.save(store.env)))
        with store.activate():
            yield

    def release(self, store: LlamaStore) -> None:
        """A persistent store is checked and let go; a fresh one waits for the report."""
        if self.lease is None:
            return
        with as_test_error(
            PersistentStoreError,
            doing=f"llama_store: cannot check persistent store {self.persistent!r}",
        ):
            try:
                self.lease.release()
            finally:
                self._hook.pytest_llamastate_store_released(
                    store=store, kept=True, nodeid=self.request.node.nodeid
                )
