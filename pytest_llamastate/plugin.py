"""The pytest hooks: configure, xdist wiring, markers, header, summary, reports.

Only *when* things happen in pytest's life cycle is decided here; the fixtures are in
``fixtures`` (registered with this module, pytest-django's split), and everything that
knows Llama Stack's files and processes lives in the modules below those.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from . import environ, hookspecs, options
from .backends.postgres import PostgresError, check_server
from .databases import PostgresStores, owner_pid
from .fixtures import (
    llama_mcp_server,
    llama_stack,
    llama_stack_config,
    llama_stack_factory,
    llama_store,
    llama_store_factory,
    llama_toolgroups,
    ogx_stack,
)
from .flavor import FLAVORS
from .guard import HomeGuard, real_state_homes
from .mcptools import stop_shared_servers
from .options import Settings
from .persistence import PersistentStores, check_name
from .reports import (
    basetemp_note,
    describe_store,
    kept_lines,
    persistent_lines,
    server_log_section,
)
from .seeds import SeedError, merge_seeds, parse_seeds
from .session import (
    ItemState,
    SessionState,
    item_state,
    marker_seeds_key,
    persistent_key,
    session_key,
    session_state,
)
from .stack import LlamaStackFactory
from .stackconfig import StackConfig, StackConfigError
from .store import LlamaStore
from .stores import LlamaStoreFactory, make_run_dir
from .templates import TemplateCache

__all__ = [
    "LlamaStoreLeakWarning",
    "llama_mcp_server",
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
_KEPT_KEY = "llamastate_kept"


class LlamaStoreLeakWarning(UserWarning):
    """A test wrote to the real Llama Stack home (``--llama-guard=warn``)."""


def pytest_addoption(parser: pytest.Parser) -> None:
    options.addoption(parser)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def pytest_configure(config: pytest.Config) -> None:
    settings = Settings.from_config(config)
    # Resolved now, before any fixture points the environment at a store.
    guard = None if settings.guard == "off" else HomeGuard.for_roots(real_state_homes(os.environ))
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
    workerinput: dict[str, Any] = getattr(config, "workerinput", {})
    # xdist hands every worker of a run the same id; a run without workers makes its own.
    persistent = PersistentStores(
        settings.persist_dir,
        workerinput.get("testrunuid") or uuid.uuid4().hex,
        settings.reset_persistent,
        settings.persist_lock_timeout,
    )
    templates = TemplateCache(
        Path(workerinput[_TEMPLATES_KEY])
        if _TEMPLATES_KEY in workerinput
        else TemplateCache.new_root(),
        settings.flavor,
        settings.stack_config,
    )
    databases = None
    if settings.backend == "postgres":
        databases = _postgres_stores(config, settings, templates, persistent.run_id)
        persistent.databases = databases
    base: Path | None = None
    if settings.store_dir is not None:
        if _RUN_DIR_KEY in workerinput:
            base = Path(workerinput[_RUN_DIR_KEY]) / workerinput["workerid"]
        else:
            base = make_run_dir(settings.store_dir, settings.retention_count)
    stacks = LlamaStackFactory(
        settings.stack_mode,
        settings.stack_config,
        settings.start_timeout,
        settings.flavor,
        settings.server_process,
    )
    config.stash[session_key] = SessionState(
        settings,
        LlamaStoreFactory(settings.keep, templates, base, databases),
        guard,
        stacks,
        persistent,
    )
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistHooks(), "llamastate-xdist")


def _postgres_stores(
    config: pytest.Config, settings: Settings, templates: TemplateCache, run_id: str
) -> PostgresStores | None:
    """The session's Postgres server and its janitor; ``None`` in an xdist controller,
    which runs no test (it checks a given server, so a bad URL stops the run at once)."""
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    try:
        if workerinput is None and getattr(config.option, "numprocesses", None):
            if settings.postgres_url:
                check_server(settings.postgres_url)
            return None
        return PostgresStores.start(
            url=settings.postgres_url,
            data_dir=settings.persist_dir / ".postgres",
            flavor=settings.flavor,
            templates=templates,
            run_id=run_id,
            worker=(workerinput or {}).get("workerid", "main"),
            owner_pid=owner_pid(workerinput is not None),
            table=StackConfig.load(settings.stack_config).postgres_kv_table,
        )
    except (PostgresError, StackConfigError) as exc:
        raise pytest.UsageError(f"--llama-backend=postgres: {exc}") from None


class _XdistHooks:
    """Registered only when pytest-xdist is installed, so its hooks are known."""

    @pytest.hookimpl
    def pytest_configure_node(self, node: Any) -> None:
        factory = session_state(node.config).factory
        node.workerinput[_TEMPLATES_KEY] = str(factory.templates.root)
        if factory.base is not None:
            node.workerinput[_RUN_DIR_KEY] = str(factory.base)

    @pytest.hookimpl
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        kept = getattr(node, "workeroutput", {}).get(_KEPT_KEY, [])
        session_state(node.config).kept.extend((a, b, c) for a, b, c in kept)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Overlap the stack's import with collection; not in an xdist controller, which runs
    no test."""
    controller = bool(getattr(session.config.option, "numprocesses", None))
    if hasattr(session.config, "workerinput") or not controller:
        session_state(session.config).stacks.warm_up()


def pytest_unconfigure(config: pytest.Config) -> None:
    if session_key not in config.stash:
        return
    if (guard := session_state(config).guard) is not None:
        guard.close()
    if not hasattr(config, "workerinput"):
        session_state(config).factory.templates.remove()


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
            item.stash[marker_seeds_key] = merge_seeds(*layers)
        if (persistent := item.get_closest_marker("persistent")) is not None:
            name = persistent.args[0] if persistent.args else persistent.kwargs.get("name")
            if name is None:  # default: the module, e.g. tests.test_soak
                name = item.nodeid.split("::")[0].removesuffix(".py").replace("/", ".")
            try:
                item.stash[persistent_key] = check_name(name)
            except ValueError as exc:
                raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.persistent: {exc}") from None


def pytest_report_header(config: pytest.Config) -> list[str]:
    state = session_state(config)
    s = state.settings
    where = state.factory.base or "<basetemp>/llamastate"
    flavor = f"flavor={s.flavor.name} {s.flavor.version() or 'not installed'}"
    flavor += "".join(
        f" ({f.name} {f.version()} also installed)"
        for f in FLAVORS
        if f is not s.flavor and f.installed()
    )
    reset = f" (reset: {', '.join(sorted(s.reset_persistent))})" if s.reset_persistent else ""
    return [
        f"llamastate: stores in {where}, keep={s.keep}, guard={s.guard}, "
        f"stack mode={s.stack_mode}"
        + (f" ({s.server_process})" if s.stack_mode == "server" else "")
        + f", {flavor}",
        f"llamastate: persistent stores in {s.persist_dir}{reset}",
    ]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    guard = session_state(item.config).guard
    if guard is not None:
        # The first test sets the watches up: an xdist controller, which runs none, never does.
        item_state(item).guard_mark = guard.begin()
    return (yield)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """After every fixture of the test is gone: the last word on the environment, then
    the guard's look at the real homes."""
    try:
        return (yield)
    finally:
        istate = item_state(item)
        _settle_environment(istate)
        _check_homes(session_state(item.config), istate)


def _settle_environment(istate: ItemState) -> None:
    """Put back each variable a store set that still points into the store.

    ``llama_store`` restores the environment when it ends, but a ``monkeypatch`` set up
    before it ends after it, and puts back the value it saw: the store's. Whatever the
    order of fixtures, a variable still naming this test's store now gets the value it had
    before the store was activated; one set to anything else was set on purpose.
    """
    for store_env, before in reversed(istate.activations):
        environ.restore({n: v for n, v in before.items() if os.environ.get(n) == store_env[n]})


def _check_homes(state: SessionState, istate: ItemState) -> None:
    if state.guard is None or istate.guard_mark is None:
        return
    changes = state.guard.end(istate.guard_mark)
    if not changes:
        return
    message = state.guard.describe(changes)
    if state.settings.guard == "warn":
        warnings.warn(LlamaStoreLeakWarning(message), stacklevel=1)
    else:
        istate.leak = message


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    istate = item_state(item)
    if report.when == "teardown" and istate.leak:
        _report_leak(report, istate.leak)
    if report.failed:
        istate.failed = True
        _add_state_sections(report, istate)
    if report.when == "teardown":
        _release_stores(item, report, istate)
        if istate.leases:
            report.llama_persistent = [  # type: ignore[attr-defined]  # travels with xdist
                (lease.name, str(lease.store.path), lease.status) for lease in istate.leases
            ]
    return report


def _report_leak(report: pytest.TestReport, leak: str) -> None:
    """A write to the real home fails a test that passed, and is added to one that did not."""
    if report.passed:
        report.outcome = "failed"
        report.longrepr = leak
    else:
        report.sections.append(("llama guard", leak))


def _add_state_sections(report: pytest.TestReport, istate: ItemState) -> None:
    described = [describe_store(s, istate.initial.get(s.path)) for s in istate.stores] + [
        describe_store(lease.store, istate.initial.get(lease.store.path), lease)
        for lease in istate.leases
    ]
    if described:
        report.sections.append(("llama store", "\n\n".join(described)))
    logs = [s.log_path for s in istate.stacks if s.mode == "server"] + istate.failed_logs
    for log in dict.fromkeys(logs):
        report.sections.append(server_log_section(log))


def _release_stores(item: pytest.Item, report: pytest.TestReport, istate: ItemState) -> None:
    """Apply the keep policy once the test's last phase is reported."""
    factory = session_state(item.config).factory
    kept = []
    for store in istate.stores:
        keep = factory.release(store, failed=istate.failed)
        item.ihook.pytest_llamastate_store_released(store=store, kept=keep, nodeid=item.nodeid)
        if keep:
            kept.append(_kept(store))
    if kept:
        report.llama_kept_stores = kept  # type: ignore[attr-defined]  # travels with xdist


def _kept(store: LlamaStore) -> tuple[str, str]:
    """A kept store for the summary: its folder, and how to open its database."""
    return str(store.path), store.database.psql if store.database else ""


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = session_state(session.config)
    state.stacks.close_all()
    stop_shared_servers()
    failed = session.testsfailed > 0 or exitstatus not in (0, pytest.ExitCode.NO_TESTS_COLLECTED)
    kept = [(s.label, *_kept(s)) for s in state.factory.finish(failed=failed)]
    state.kept.extend(kept)
    if (databases := state.factory.databases) is not None:
        if not hasattr(session.config, "workerinput"):
            databases.drop_templates()  # under xdist, the next run prunes them
        databases.close()
    workeroutput: dict[str, Any] | None = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput[_KEPT_KEY] = kept


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    # Reports from xdist workers arrive here too, with llama_kept_stores on them.
    kept = [
        (report.nodeid, path, psql)
        for reports in terminalreporter.stats.values()
        for report in reports
        for path, psql in getattr(report, "llama_kept_stores", ())
    ]
    kept += session_state(config).kept
    if kept:
        terminalreporter.section("llama stores kept")
        note = None
        if session_state(config).settings.store_dir is None:
            note = basetemp_note(
                bool(config.option.basetemp), str(config.getini("tmp_path_retention_count"))
            )
        for line in kept_lines(kept, note):
            terminalreporter.write_line(line)
    uses: dict[tuple[str, str], list[str]] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            for name, path, status in getattr(report, "llama_persistent", ()):
                uses.setdefault((name, path), []).append(status)
    if uses:
        terminalreporter.section("llama persistent stores")
        for line in persistent_lines(uses):
            terminalreporter.write_line(line)
