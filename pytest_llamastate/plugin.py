"""The pytest glue: options, fixtures, report header and summary, xdist wiring.

Everything that knows Llama Stack's files lives in the modules this one imports; here we
only decide *when* things happen in pytest's life cycle.
"""

from __future__ import annotations

import copy
import os
import uuid
import warnings
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from . import options
from .factory import LlamaStoreFactory, make_run_dir
from .flavor import FLAVORS
from .guard import HomeGuard, Snapshot, real_state_homes
from .options import Settings
from .persistence import Lease, PersistentStoreError, PersistentStores, check_name, fingerprint
from .registry import RegistrySnapshot, StoreCorruptError
from .seeds import SeedError, TemplateCache, ToolgroupSeed, merge_seeds, parse_seeds
from .stack import LlamaStack, LlamaStackFactory, StackError
from .stackconfig import StackConfig, StackConfigError
from .store import LlamaStore

__all__ = [
    "LlamaStoreLeakWarning",
    "llama_stack",
    "llama_stack_config",
    "llama_stack_factory",
    "llama_store",
    "llama_store_factory",
    "llama_toolgroups",
    "ogx_stack",
]

_RUN_DIR_KEY = "llamastate_run_dir"
_TEMPLATES_KEY = "llamastate_templates"
_RUN_ID_KEY = "llamastate_run_id"
_KEPT_KEY = "llamastate_kept"


class LlamaStoreLeakWarning(UserWarning):
    """A test wrote to the real Llama Stack home (``--llama-guard=warn``)."""


@dataclass
class _SessionState:
    settings: Settings
    factory: LlamaStoreFactory
    guard: HomeGuard | None
    stacks: LlamaStackFactory
    persistent: PersistentStores
    kept: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class _ItemState:
    stores: list[LlamaStore] = field(default_factory=list)
    stacks: list[LlamaStack] = field(default_factory=list)
    initial: dict[Path, RegistrySnapshot] = field(default_factory=dict)
    leases: list[Lease] = field(default_factory=list)
    failed: bool = False
    before: Snapshot | None = None
    leak: str | None = None


_session_key = pytest.StashKey[_SessionState]()
_item_key = pytest.StashKey[_ItemState]()
_marker_seeds_key = pytest.StashKey[tuple[ToolgroupSeed, ...]]()
_persistent_key = pytest.StashKey[str]()


def _state(config: pytest.Config) -> _SessionState:
    return config.stash[_session_key]


def _item_state(item: pytest.Item) -> _ItemState:
    return item.stash.setdefault(_item_key, _ItemState())


def pytest_addoption(parser: pytest.Parser) -> None:
    options.addoption(parser)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from . import hooks

    pluginmanager.add_hookspecs(hooks)


def pytest_configure(config: pytest.Config) -> None:
    settings = Settings.from_config(config)
    # Resolved now, before any fixture points the environment at a store.
    guard = None if settings.guard == "off" else HomeGuard.for_roots(real_state_homes(os.environ))
    base: Path | None = None
    config.addinivalue_line(
        "markers",
        "llama_toolgroups(*seeds): toolgroups the test's llama_store starts with "
        "(ToolgroupSeed, mapping or id; on a test, class or module)",
    )
    config.addinivalue_line(
        "markers",
        "persistent(name=None): the test's llama_store is the named persistent store, kept "
        "across tests and runs (default name: the test module)",
    )
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    persistent = PersistentStores(
        settings.persist_dir,
        (workerinput or {}).get(_RUN_ID_KEY) or uuid.uuid4().hex,
        settings.reset_persistent,
        settings.persist_lock_timeout,
    )
    templates = TemplateCache(
        Path(workerinput[_TEMPLATES_KEY])
        if workerinput is not None and _TEMPLATES_KEY in workerinput
        else TemplateCache.new_root(),
        settings.flavor,
        settings.stack_config,
    )
    if settings.store_dir is not None:
        if workerinput is not None and _RUN_DIR_KEY in workerinput:
            base = Path(workerinput[_RUN_DIR_KEY]) / workerinput["workerid"]
        else:
            base = make_run_dir(settings.store_dir, settings.retention_count)
    stacks = LlamaStackFactory(
        settings.stack_mode, settings.stack_config, settings.start_timeout, settings.flavor
    )
    config.stash[_session_key] = _SessionState(
        settings, LlamaStoreFactory(settings.keep, templates, base), guard, stacks, persistent
    )
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistHooks(), "llamastate-xdist")


class _XdistHooks:
    """Registered only when pytest-xdist is installed, so its hooks are known."""

    @pytest.hookimpl
    def pytest_configure_node(self, node: Any) -> None:
        factory = _state(node.config).factory
        node.workerinput[_TEMPLATES_KEY] = str(factory.templates.root)
        node.workerinput[_RUN_ID_KEY] = _state(node.config).persistent.run_id
        if factory._base is not None:
            node.workerinput[_RUN_DIR_KEY] = str(factory._base)

    @pytest.hookimpl
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        kept = getattr(node, "workeroutput", {}).get(_KEPT_KEY, [])
        _state(node.config).kept.extend(tuple(pair) for pair in kept)


def pytest_unconfigure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput") and _session_key in config.stash:
        _state(config).factory.templates.remove()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Parse every ``llama_toolgroups`` and ``persistent`` marker now: a malformed seed or
    store name stops the run before any test starts."""
    for item in items:
        layers = []
        for marker in reversed(list(item.iter_markers("llama_toolgroups"))):
            try:
                layers.append(parse_seeds(marker.args, f"{item.nodeid}: llama_toolgroups"))
            except SeedError as exc:
                raise pytest.UsageError(str(exc)) from None
        if layers:
            item.stash[_marker_seeds_key] = merge_seeds(*layers)
        if (persistent := item.get_closest_marker("persistent")) is not None:
            name = persistent.args[0] if persistent.args else persistent.kwargs.get("name")
            if name is None:  # default: the module, e.g. tests.test_soak
                name = item.nodeid.split("::")[0].removesuffix(".py").replace("/", ".")
            try:
                item.stash[_persistent_key] = check_name(name)
            except ValueError as exc:
                raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.persistent: {exc}") from None


def pytest_report_header(config: pytest.Config) -> list[str]:
    state = _state(config)
    s = state.settings
    where = state.factory._base or "<basetemp>/llamastate"
    flavor = f"flavor={s.flavor.name} {s.flavor.version() or 'not installed'}"
    flavor += "".join(
        f" ({f.name} {f.version()} also installed)"
        for f in FLAVORS
        if f is not s.flavor and f.installed()
    )
    reset = f" (reset: {', '.join(sorted(s.reset_persistent))})" if s.reset_persistent else ""
    return [
        f"llamastate: stores in {where}, keep={s.keep}, guard={s.guard}, "
        f"stack mode={s.stack_mode}, {flavor}",
        f"llamastate: persistent stores in {s.persist_dir}{reset}",
    ]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    guard = _state(item.config).guard
    if guard is not None:
        _item_state(item).before = guard.snapshot()
    return (yield)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    try:
        return (yield)
    finally:
        state = _state(item.config)
        before = _item_state(item).before
        if state.guard is not None and before is not None:
            changes = state.guard.changes(before, state.guard.snapshot())
            if changes:
                message = state.guard.describe(changes)
                if state.settings.guard == "warn":
                    warnings.warn(LlamaStoreLeakWarning(message), stacklevel=1)
                else:
                    _item_state(item).leak = message


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    istate = _item_state(item)
    if report.when == "teardown" and istate.leak:
        if report.passed:
            report.outcome = "failed"
            report.longrepr = istate.leak
        else:
            report.sections.append(("llama guard", istate.leak))
    if report.failed:
        istate.failed = True
        described = [_describe(s, istate.initial.get(s.path)) for s in istate.stores] + [
            _describe(lease.store, istate.initial.get(lease.store.path), lease)
            for lease in istate.leases
        ]
        if described:
            report.sections.append(("llama store", "\n\n".join(described)))
        for stack in istate.stacks:
            if stack.mode == "server":
                report.sections.append(
                    (f"llama stack server log ({stack.log_path})", stack.log_tail())
                )
    if report.when == "teardown" and istate.stores:
        factory = _state(item.config).factory
        kept = []
        for store in istate.stores:
            keep = factory.release(store, failed=istate.failed)
            item.ihook.pytest_llamastate_store_released(store=store, kept=keep, nodeid=item.nodeid)
            if keep:
                kept.append(str(store.path))
        if kept:
            report.llama_kept_stores = kept  # type: ignore[attr-defined]  # travels with xdist
    if report.when == "teardown" and istate.leases:
        report.llama_persistent = [  # type: ignore[attr-defined]
            (lease.name, str(lease.store.path), lease.status) for lease in istate.leases
        ]
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = _state(session.config)
    state.stacks.close_all()
    failed = session.testsfailed > 0 or exitstatus not in (0, pytest.ExitCode.NO_TESTS_COLLECTED)
    kept = [(s.label, str(s.path)) for s in state.factory.finish(failed=failed)]
    state.kept.extend(kept)
    workeroutput: dict[str, Any] | None = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput[_KEPT_KEY] = kept


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    # Reports from xdist workers arrive here too, with llama_kept_stores on them.
    kept = [
        (report.nodeid, path)
        for reports in terminalreporter.stats.values()
        for report in reports
        for path in getattr(report, "llama_kept_stores", ())
    ]
    kept += _state(config).kept
    if kept:
        terminalreporter.section("llama stores kept")
        for label, path in kept:
            terminalreporter.write_line(f"{label}: {path}")
    persistent: dict[tuple[str, str], list[str]] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            for name, path, status in getattr(report, "llama_persistent", ()):
                persistent.setdefault((name, path), []).append(status)
    if persistent:
        terminalreporter.section("llama persistent stores")
        for (name, path), statuses in sorted(persistent.items()):
            first = next((s for s in statuses if s != "reused"), "reused")
            terminalreporter.write_line(
                f"{name}: {path} ({first}, used by {len(statuses)} test(s))"
            )


@pytest.fixture(scope="session")
def llama_store_factory(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> LlamaStoreFactory:
    """Session-wide maker of stores, for module- or session-scoped state of your own."""
    factory = _state(request.config).factory
    factory.set_default_base(lambda: tmp_path_factory.getbasetemp() / "llamastate")
    return factory


@pytest.fixture
def llama_toolgroups(request: pytest.FixtureRequest) -> list[ToolgroupSeed]:
    """The toolgroups this test's store starts with; override it to compute your own.

    The ``llama_toolgroups_file`` seeds, then the ``llama_toolgroups`` markers of the
    module, class and test; a closer seed replaces a farther one with the same id.
    """
    return list(
        merge_seeds(
            _state(request.config).settings.seeds, request.node.stash.get(_marker_seeds_key, ())
        )
    )


@pytest.fixture
def llama_store(
    request: pytest.FixtureRequest,
    llama_store_factory: LlamaStoreFactory,
    llama_toolgroups: list[ToolgroupSeed],
    llama_stack_config: Path | str | StackConfig,
) -> Iterator[LlamaStore]:
    """A fresh Llama Stack state folder for this test, active while it runs.

    ``SQLITE_STORE_DIR`` and the other state roots point into it from setup to teardown;
    afterwards every variable is exactly as before. It holds the ``llama_toolgroups``
    seeds before the test starts. Kept after a failure (see ``llama_keep_store``) and
    named in the failure report. Under ``@pytest.mark.persistent`` it is the named
    persistent store instead, locked for this test.
    """
    istate = _item_state(request.node)
    name = request.node.stash.get(_persistent_key, None)
    lease: Lease | None = None
    hook = request.node.ihook
    with _as_test_error(SeedError, PersistentStoreError):
        wanted = list(llama_toolgroups)
        hook.pytest_llamastate_seeds(seeds=wanted, request=request)
        seeds = parse_seeds(wanted, "llama_toolgroups")
        if name is None:
            store = llama_store_factory.mktemp(
                request.node.name, label=request.node.nodeid, seeds=seeds
            )
            istate.stores.append(store)
        else:
            lease = _state(request.config).persistent.acquire(
                name,
                fingerprint=fingerprint(_stack_versions(), _config_text(llama_stack_config), seeds),
                seeds=seeds,
                templates=llama_store_factory.templates,
            )
            istate.leases.append(lease)
            store = lease.store
    try:
        with _as_test_error(StoreCorruptError):
            # What the test changes is reported on failure: remember where it started.
            istate.initial[store.path] = (
                store.snapshot() if lease is not None or seeds else RegistrySnapshot()
            )
        hook.pytest_llamastate_store_created(store=store, request=request)
        with store.activate():
            yield store
    finally:
        if lease is not None:
            with _as_test_error(PersistentStoreError):
                try:
                    lease.release()
                finally:
                    hook.pytest_llamastate_store_released(
                        store=store, kept=True, nodeid=request.node.nodeid
                    )


def _describe(
    store: LlamaStore, initial: RegistrySnapshot | None, lease: Lease | None = None
) -> str:
    """The failure-report view of a store: where, what is in it, what the test changed."""
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
    return "\n".join(lines)


def _stack_versions() -> str:
    return ",".join(f"{f.distribution}={f.version()}" for f in FLAVORS)


def _config_text(config: Path | str | StackConfig) -> str:
    if isinstance(config, StackConfig):
        return config.text
    try:
        return Path(config).read_text(encoding="utf-8")
    except OSError:
        return str(config)


@contextmanager
def _as_test_error(*errors: type[Exception]) -> Iterator[None]:
    """Turn our own errors into a test error showing only their message.

    The failure is raised ``from None``: inside a context manager's ``__exit__`` the
    error is still being handled even outside the ``except`` block, so the report would
    add "During handling of the above exception" and the message twice.
    """
    try:
        yield
    except errors as exc:
        problem = str(exc)
    else:
        return
    raise pytest.fail.Exception(problem, pytrace=False) from None


@pytest.fixture
def llama_stack_config(pytestconfig: pytest.Config) -> Path | str | StackConfig:
    """The run config ``llama_stack`` starts; override it to use your own.

    Returns ``--llama-stack-config`` / ini ``llama_stack_config`` or the plugin's offline
    ``minimal.yaml``. Every path the config writes must resolve inside the test's store.
    """
    return _state(pytestconfig).settings.stack_config


@pytest.fixture(scope="session")
def llama_stack_factory(request: pytest.FixtureRequest) -> Iterator[LlamaStackFactory]:
    """Session-wide starter of stacks, for module- or session-scoped stacks of your own."""
    factory = _state(request.config).stacks
    yield factory
    factory.close_all()


@pytest.fixture
def llama_stack(
    request: pytest.FixtureRequest,
    llama_store: LlamaStore,
    llama_stack_factory: LlamaStackFactory,
    llama_stack_config: Path | str | StackConfig,
) -> Iterator[LlamaStack]:
    """A real Llama Stack running on this test's store, stopped after the test.

    Library mode (default) runs it in-process; ``--llama-stack-mode=server`` runs
    ``llama stack run`` (OGX: ``ogx run``) as a child process (``base_url`` is set, its
    log is attached to a failing test's report). Which of the two: ``llama_flavor``.
    """
    with _as_test_error(StackError, StackConfigError):
        config = (
            llama_stack_config
            if isinstance(llama_stack_config, StackConfig)
            else llama_stack_factory.load_config(llama_stack_config)
        )
        data = copy.deepcopy(dict(config.data))
        request.node.ihook.pytest_llamastate_stack_config(
            config=data, store=llama_store, request=request
        )
        if data != config.data:
            import yaml

            config = StackConfig(config.path, yaml.safe_dump(data, sort_keys=False), data)
        stack = llama_stack_factory.start(llama_store, config=config, label=request.node.nodeid)
    _item_state(request.node).stacks.append(stack)
    try:
        yield stack
    finally:
        stack.close()


@pytest.fixture
def ogx_stack(llama_stack: LlamaStack) -> LlamaStack:
    """``llama_stack`` by its OGX name: the same stack object, for suites that say OGX."""
    return llama_stack
