"""The pytest hooks: configure, xdist wiring, markers, header, summary, reports.

Only *when* things happen in pytest's life cycle is decided here; the fixtures are in
``fixtures`` (registered with this module, pytest-django's split), and everything that
knows Llama Stack's files and processes lives in the modules below those.
"""

from __future__ import annotations

import warnings
from collections.abc import Generator, Iterator
from typing import Any

import pytest

from ..stack import shortcuts
from ..stack.state_templates import llama_template
from ..state import environ
from ..state.leaks import (
    LlamaSharedStoreLeakWarning,
    LlamaStoreLeakWarning,
    left_behind,
    read_shared,
)
from ..state.mcptools import stop_shared_servers
from ..storage.base import StorageError
from . import hookspecs, markers, options
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
from .reports import (
    basetemp_note,
    describe_store,
    kept_entry,
    kept_lines,
    persistent_lines,
    server_log_section,
    template_lines,
)
from .session import (
    ItemState,
    SessionState,
    item_state,
    session_key,
    session_state,
    xdist_controller,
)
from .session_setup import build_session
from .xdist import KEPT_KEY, XdistHooks

__all__ = [
    "LlamaSharedStoreLeakWarning",
    "LlamaStoreLeakWarning",
    "llama_mcp_server",
    "llama_stack",
    "llama_stack_config",
    "llama_stack_factory",
    "llama_store",
    "llama_store_factory",
    "llama_template",
    "llama_toolgroups",
    "ogx_stack",
]

pytest_plugins = ["pytest_llamastate.plugin.inference"]  # --llama-inference, llama_recordings


def pytest_addoption(parser: pytest.Parser) -> None:
    options.addoption(parser)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def pytest_configure(config: pytest.Config) -> None:
    for marker in markers.MARKERS:
        config.addinivalue_line("markers", marker)
    config.stash[session_key] = build_session(config)
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(XdistHooks(), "llamastate-xdist")


def pytest_sessionstart(session: pytest.Session) -> None:
    """Overlap the stack's import with collection (not in an xdist controller)."""
    if not xdist_controller(session.config):
        session_state(session.config).stacks.warm_up()


def pytest_unconfigure(config: pytest.Config) -> None:
    if session_key not in config.stash:
        return
    if (guard := session_state(config).guard) is not None:
        guard.close()
    if not hasattr(config, "workerinput"):
        session_state(config).factory.templates.remove()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Parse every marker now: a malformed seed, store name or unknown template stops the
    run before any test starts."""
    markers.parse(config, items)


def pytest_report_header(config: pytest.Config) -> list[str]:
    state = session_state(config)
    s = state.settings
    where = state.factory.base or "<basetemp>/llamastate"
    flavor = f"flavor={s.flavor.describe()}"
    flavor += "".join(f" ({f.name} {f.version()} also installed)" for f in s.flavor.others())
    reset = f" (reset: {', '.join(sorted(s.reset_persistent))})" if s.reset_persistent else ""
    how = {"server": f" ({s.server_process})", "container": f" ({s.container})"}
    return [
        f"llamastate: stores in {where}, keep={s.keep}, guard={s.guard}, "
        f"stack mode={s.stack_mode}{how.get(s.stack_mode, '')}, {flavor}",
        f"llamastate: persistent stores in {s.persist_dir}{reset}",
        *state.factory.storage.header(),
        *(f"llamastate: {line}" for line in s.flavor.header_notes()),
        *([shortcuts.describe(s.flavor)] if s.flavor.installed() else []),
    ]


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> Generator[None, object, object]:
    """A store made while a fixture wider than a test is set up is shared by tests."""
    state = session_state(request.config)
    if state.settings.leaks == "off" or fixturedef.scope == "function":
        return (yield)
    before = state.factory.pending().keys()
    try:
        return (yield)
    finally:
        state.shared.update(state.factory.pending().keys() - before)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    state, istate = session_state(item.config), item_state(item)
    if state.guard is not None:
        # The first test sets the watches up: an xdist controller, which runs none, never does.
        istate.guard_mark = state.guard.begin()
    read_shared(state.shared, state.factory.pending(), istate.shared_start)  # before the test
    try:
        return (yield)
    finally:  # and those its fixtures made, as they left them
        read_shared(state.shared, state.factory.pending(), istate.shared_start)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """After every fixture of the test is gone: the last word on the environment, then
    the guard's look at the real homes."""
    try:
        return (yield)
    finally:
        istate = item_state(item)
        environ.settle(istate.activations)
        _check_homes(session_state(item.config), istate)
        _check_shared(item, session_state(item.config), istate)


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


def _check_shared(item: pytest.Item, state: SessionState, istate: ItemState) -> None:
    """Name what the test left in each shared store (``llama_leaks``)."""
    found = left_behind(item.nodeid, istate.shared_start, state.factory.pending())
    if found and state.settings.leaks == "warn":
        for message in found:
            line = (item.location[1] or 0) + 1  # shown at the test, not at this line
            warnings.warn_explicit(LlamaSharedStoreLeakWarning(message), None, str(item.path), line)
    elif found:
        istate.shared_leak = "\n\n".join(found)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    istate = item_state(item)
    if report.when == "teardown" and istate.leak:
        _report_leak(report, istate.leak, "llama guard")
    if report.when == "teardown" and istate.shared_leak:
        _report_leak(report, istate.shared_leak, "llama leaks")
    if report.failed:
        istate.failed = True
        _add_state_sections(report, istate)
    if report.when == "teardown":
        _release_stores(item, report, istate)
        if istate.templates:
            report.llama_templates = [  # type: ignore[attr-defined]  # travels with xdist
                (e.name, e.path, e.status, e.reason, e.seconds) for e in istate.templates
            ]
        if istate.leases:
            report.llama_persistent = [  # type: ignore[attr-defined]  # travels with xdist
                (lease.name, str(lease.store.path), lease.status) for lease in istate.leases
            ]
    return report


def _report_leak(report: pytest.TestReport, leak: str, section: str) -> None:
    """A leak fails a test that passed, and is added to the report of one that did not."""
    if report.passed:
        report.outcome = "failed"
        report.longrepr = leak
    else:
        report.sections.append((section, leak))


def _add_state_sections(report: pytest.TestReport, istate: ItemState) -> None:
    described = [describe_store(s, istate.initial.get(s.path)) for s in istate.stores] + [
        describe_store(lease.store, istate.initial.get(lease.store.path), lease)
        for lease in istate.leases
    ]
    if described:
        report.sections.append(("llama store", "\n\n".join(described)))
    logs = [s.log_path for s in istate.stacks if s.mode != "library"] + istate.failed_logs
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
            kept.append(kept_entry(store))
    if kept:
        report.llama_kept_stores = kept  # type: ignore[attr-defined]  # travels with xdist


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = session_state(session.config)
    state.stacks.close_all()
    stop_shared_servers()
    failed = session.testsfailed > 0 or exitstatus not in (0, pytest.ExitCode.NO_TESTS_COLLECTED)
    kept = [(s.label, *kept_entry(s)) for s in state.factory.finish(failed=failed)]
    state.kept.extend(kept)
    try:
        # Under xdist, the next run prunes what the workers' storage leaves.
        state.factory.storage.close(last=not hasattr(session.config, "workerinput"))
    except StorageError as exc:  # the server died with the run: one line, like the rest
        if reporter := session.config.pluginmanager.get_plugin("terminalreporter"):
            reporter.write_line(
                f"llamastate: seed templates not dropped (the next run drops them): {exc}",
                yellow=True,
            )
    workeroutput: dict[str, Any] | None = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput[KEPT_KEY] = kept


def _carried(terminalreporter: pytest.TerminalReporter, attr: str) -> Iterator[tuple[Any, Any]]:
    """(report, value) for each value a test report carries in ``attr``: reports from xdist
    workers arrive here too, with the attribute on them."""
    for reports in terminalreporter.stats.values():
        for report in reports:
            for value in getattr(report, attr, ()):
                yield report, value


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    kept = [(r.nodeid, *value) for r, value in _carried(terminalreporter, "llama_kept_stores")]
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
    for _, (name, path, status) in _carried(terminalreporter, "llama_persistent"):
        uses.setdefault((name, path), []).append(status)
    if uses:
        terminalreporter.section("llama persistent stores")
        for line in persistent_lines(uses):
            terminalreporter.write_line(line)
    if events := [event for _, event in _carried(terminalreporter, "llama_templates")]:
        terminalreporter.section("llama templates")
        for line in template_lines(events):
            terminalreporter.write_line(line)
