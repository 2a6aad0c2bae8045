"""The session's objects, built once at configure from the validated settings: the seed
rows' cache, the storage backend, persistent stores, the store and stack factories, state
templates and the guard of the real homes. Under xdist, workers share what the controller
handed them (``xdist``)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from ..stack import LlamaStackFactory
from ..stack.state_templates import StateTemplates
from ..state.guard import HomeGuard, real_state_homes
from ..state.persistent import PersistentStores
from ..state.seed_rows import TemplateCache
from ..state.stackconfig import StackConfig, StackConfigError
from ..state.store_factory import LlamaStoreFactory, make_run_dir
from ..storage.backends import backend
from ..storage.base import SessionSpec, Storage, StorageError
from .options import Settings
from .session import SessionState, xdist_controller
from .xdist import RUN_DIR_KEY, TEMPLATES_KEY

__all__ = ["build_session"]


def build_session(config: pytest.Config) -> SessionState:
    """Every session object, from the options; a bad option or an unusable storage backend
    stops the run with one line."""
    settings = Settings.from_config(config)
    # Resolved now, before any fixture points the environment at a store.
    guard = None if settings.guard == "off" else HomeGuard.for_roots(real_state_homes(os.environ))
    workerinput: dict[str, Any] = getattr(config, "workerinput", {})
    # xdist hands every worker of a run the same id; a run without workers makes its own.
    run_id = workerinput.get("testrunuid") or uuid.uuid4().hex
    templates = _seed_rows(settings, workerinput)
    storage = _storage(config, settings, templates.root, run_id, workerinput.get("workerid"))
    templates.prefixed = storage.prefixes_keys
    persistent = PersistentStores(
        settings.persist_dir,
        run_id,
        storage,
        settings.reset_persistent,
        settings.persist_lock_timeout,
    )
    stacks = _stacks(settings)
    return SessionState(
        settings,
        LlamaStoreFactory(settings.keep, templates, _run_dir(settings, workerinput), storage),
        guard,
        stacks,
        persistent,
        _state_templates(settings, stacks, templates, persistent, guard, storage),
    )


def _seed_rows(settings: Settings, workerinput: dict[str, Any]) -> TemplateCache:
    """The seed rows' cache: the controller's folder in an xdist worker, a new one otherwise."""
    root = workerinput.get(TEMPLATES_KEY)
    return TemplateCache(
        Path(root) if root is not None else TemplateCache.new_root(),
        settings.flavor,
        settings.stack_config,
    )


def _storage(
    config: pytest.Config, settings: Settings, templates: Path, run_id: str, worker: str | None
) -> Storage:
    """The session's storage backend, as ``--llama-backend`` chooses; a backend that cannot
    be used stops the run with one line."""
    spec = SessionSpec(
        flavor=settings.flavor,
        run_id=run_id,
        worker=worker,
        controller=xdist_controller(config),
        templates=templates,
        data_dir=settings.persist_dir / f".{settings.backend}",
        config=lambda: StackConfig.load(settings.stack_config).data,
        url=settings.storage_url,
    )
    try:
        return backend(settings.backend).for_session(spec)
    except (StorageError, StackConfigError) as exc:
        raise pytest.UsageError(f"--llama-backend={settings.backend}: {exc}") from None


def _run_dir(settings: Settings, workerinput: dict[str, Any]) -> Path | None:
    """The run's numbered folder under ``--llama-store-dir`` (a worker's subfolder of the
    controller's); ``None``: stores go under pytest's basetemp."""
    if settings.store_dir is None:
        return None
    if RUN_DIR_KEY in workerinput:
        return Path(workerinput[RUN_DIR_KEY]) / str(workerinput["workerid"])
    return make_run_dir(settings.store_dir, settings.retention_count)


def _stacks(settings: Settings) -> LlamaStackFactory:
    return LlamaStackFactory(
        settings.stack_mode,
        settings.stack_config,
        settings.start_timeout,
        settings.flavor,
        settings.server_process,
        settings.container,
    )


def _state_templates(
    settings: Settings,
    stacks: LlamaStackFactory,
    templates: TemplateCache,
    persistent: PersistentStores,
    guard: HomeGuard | None,
    storage: Storage,
) -> StateTemplates:
    """State templates: kept in the pytest cache between runs with
    ``--llama-reuse-templates``, in the run's seed-row folder otherwise."""
    return StateTemplates(
        settings.template_cache if settings.reuse_templates else templates.root / "state",
        stacks,
        templates,
        persistent.run_id,
        settings.reuse_templates,
        guard,
        settings.guard == "warn",
        storage,
    )
