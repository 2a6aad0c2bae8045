"""The plugin's state in ``config.stash`` (per session) and ``item.stash`` (per test).

Hooks and fixtures live in separate modules (``plugin``, ``fixtures``) and meet here: what
one stage of a test's life records (its stores, their starting registry, its stacks, the
environment before it), a later stage reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ..stack import LlamaStack, LlamaStackFactory
from ..stack.state_templates import LlamaTemplate, StateTemplates, TemplateEvent
from ..state.environ import Saved
from ..state.guard import HomeGuard, Mark
from ..state.leaks import StoreState
from ..state.persistent import Lease, PersistentStores
from ..state.registry import RegistrySnapshot
from ..state.seeds import Seed
from ..state.store import LlamaStore
from ..state.store_factory import LlamaStoreFactory
from .options import Settings

__all__ = ["ItemState", "SessionState", "item_state", "session_state", "xdist_controller"]


@dataclass
class SessionState:
    settings: Settings
    factory: LlamaStoreFactory
    guard: HomeGuard | None
    stacks: LlamaStackFactory
    persistent: PersistentStores
    state_templates: StateTemplates
    #: Stores made by a fixture of a wider scope than a test: shared, so leak-checked.
    shared: set[Path] = field(default_factory=set)
    #: (label, path, psql command or "") of stores kept at session end, from this process
    #: and xdist workers.
    kept: list[tuple[str, str, str]] = field(default_factory=list)


@dataclass
class ItemState:
    stores: list[LlamaStore] = field(default_factory=list)
    stacks: list[LlamaStack] = field(default_factory=list)
    #: Logs of servers that failed to start, for the failure report.
    failed_logs: list[Path] = field(default_factory=list)
    initial: dict[Path, RegistrySnapshot] = field(default_factory=dict)
    leases: list[Lease] = field(default_factory=list)
    #: Each store's environment and what those variables were before it was activated.
    activations: list[tuple[dict[str, str], Saved]] = field(default_factory=list)
    failed: bool = False
    guard_mark: Mark | None = None
    leak: str | None = None
    #: The state of each shared store when the test started, and what it left behind.
    shared_start: dict[Path, StoreState] = field(default_factory=dict)
    shared_leak: str | None = None
    templates: list[TemplateEvent] = field(default_factory=list)


session_key = pytest.StashKey[SessionState]()
item_key = pytest.StashKey[ItemState]()
marker_seeds_key = pytest.StashKey[tuple[Seed, ...]]()
persistent_key = pytest.StashKey[str]()
template_key = pytest.StashKey[LlamaTemplate]()


def session_state(config: pytest.Config) -> SessionState:
    return config.stash[session_key]


def xdist_controller(config: pytest.Config) -> bool:
    """Whether this process hands tests to xdist workers and runs none itself."""
    return not hasattr(config, "workerinput") and bool(getattr(config.option, "numprocesses", 0))


def item_state(item: pytest.Item) -> ItemState:
    return item.stash.setdefault(item_key, ItemState())
