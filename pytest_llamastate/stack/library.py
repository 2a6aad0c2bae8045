"""The in-process way: the flavor's library client, shielded from what it does to a test run.

Storage backends, the tool index and more are process globals, so at most one library
stack is live per process and the globals are reset between stacks. Construction prints
the config, replaces the root logging handlers, leaks an event loop and fails under
``-W error`` unless shielded; OGX's client registers an ``atexit`` hook that would keep
every stack of the session alive until exit.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import warnings
from pathlib import Path
from typing import Any, ClassVar

from ..releases import Flavor, import_quietly
from ..state import environ, live
from ..state.registry import ToolgroupRecord
from ..state.seeds import ToolgroupSeed
from . import shortcuts
from .backend import StackError, StackNotInstalledError, StartSpec
from .engines import EngineTracker
from .zygote import rebase_config_dirs

__all__ = ["LibraryBackend", "process_state"]

#: Set while the client is built, unless pytest set it: the client only skips its
#: console output and logging set-up when it believes it runs under a test runner.
_UNDER_TEST = "PYTEST_CURRENT_TEST"


def process_state(flavor: Flavor) -> dict[str, Any]:
    """Each container of the line's ``process_state`` (release table), by its entry."""
    found = {}
    for entry in flavor.process_state:
        module, _, path = entry.partition(":")
        # ``core`` is ``distribution`` up to llama-stack 0.2.16: the release table says where.
        core, _, rest = module.partition(".")
        where = f"{flavor.core}.{rest}" if core == "core" else f"{flavor.package}.{module}"
        state: Any = import_quietly(where)
        for name in path.split("."):
            state = getattr(state, name, None)
        if state is not None:
            found[entry] = state
    return found


def _reset_globals(flavor: Flavor) -> None:
    """Clear what one in-process stack leaves for the next: every container the release
    keeps at class or module level (``process_state``: listed models, the tool index, the
    MCP transport per URL). ``Stack.initialize`` re-registers the storage backends itself.
    """
    for state in process_state(flavor).values():
        state.clear()


def _close_storage(flavor: Flavor) -> None:
    """Close the databases a stack that failed half-way left open in process globals.

    OGX opens its SQL store before a bad provider stops the start, and its client then
    stops its loop without shutting the stack down; the next start would drop the open
    connection unclosed (a warning at a random later point). Best effort, bounded.
    """
    if flavor.kvstore_module is None or flavor.sqlstore_module is None:
        return  # releases before 0.4.3 keep no backends in process globals
    kvstore = import_quietly(flavor.kvstore_module)
    sqlstore = import_quietly(flavor.sqlstore_module)

    async def close() -> None:
        await kvstore.shutdown_kvstore_backends()
        await sqlstore.shutdown_sqlstore_backends()

    with contextlib.suppress(Exception):
        asyncio.run(asyncio.wait_for(close(), 10))


def _new_client(spec: StartSpec) -> Any:
    flavor = spec.flavor
    try:
        library_client: Any = import_quietly(flavor.library_module)
    except ModuleNotFoundError as exc:
        raise StackNotInstalledError(
            f"{flavor.name} is not installed ({exc.name} missing): {flavor.install_hint}"
        ) from None
    _reset_globals(flavor)
    # Its folders were computed from the environment at import, before this store existed
    # (0.2.24's prompts.db under DISTRIBS_BASE_DIR would land in ~/.llama).
    rebase_config_dirs(flavor.core)
    created: list[asyncio.AbstractEventLoop] = []
    new_event_loop = asyncio.new_event_loop

    def tracked_loop() -> asyncio.AbstractEventLoop:
        loop = new_event_loop()
        created.append(loop)
        return loop

    hook = flavor.logging_hook
    setup_logging = getattr(library_client, hook) if hook else None
    # Construction would replace the root logging handlers (caplog stops working), print
    # the whole config, and trip -W error on third-party deprecation warnings.
    if hook:
        setattr(library_client, hook, lambda *a, **k: None)
    asyncio.new_event_loop = tracked_loop
    under_test = {} if _UNDER_TEST in os.environ else {_UNDER_TEST: "pytest-llamastate"}
    client = None
    try:
        with (
            environ.patched(under_test),
            warnings.catch_warnings(),
            shortcuts.applied(flavor, spec.config.path, _sqlite_store(spec)),
        ):
            warnings.simplefilter("ignore")
            client = getattr(library_client, flavor.library_client)(str(spec.config_path))
            _initialize(flavor, client)
    finally:
        if hook:
            setattr(library_client, hook, setup_logging)
        asyncio.new_event_loop = new_event_loop
        # Keep client.loop (OGX runs it in a thread); llama-stack ran initialize() on another.
        for loop in created:
            if loop is not getattr(client, "loop", None) and not loop.is_running():
                loop.close()
    return client


def _sqlite_store(spec: StartSpec) -> Path | None:
    """The folder of the store's SQLite files, when its tables are such files."""
    return spec.store.tables.sqlite_folder


def _initialize(flavor: Flavor, client: Any) -> None:
    """Start a client that does not start itself (llama-stack up to 0.2.18).

    Its own ``initialize()`` runs on a loop it then closes (up to 0.2.16), which would
    leave the stack's connections on a dead loop; so up to 0.2.16 the client is given a
    loop of its own, kept as ``client.loop`` as later releases keep theirs.
    """
    if flavor.library_start == "own-loop":
        client.loop = asyncio.new_event_loop()
    if flavor.library_start != "constructor":
        client.loop.run_until_complete(client.async_client.initialize())


def _shut_down_impls(flavor: Flavor, client: Any, engines: EngineTracker) -> None:
    """Stop a client that has no ``shutdown()`` (before 0.4.3): what the server does on
    exit, each API's implementation shut down, its SQL engines disposed, then the client's
    loop closed."""

    async def shut_down() -> None:
        for impl in client.async_client.impls.values():
            if (shutdown := getattr(impl, "shutdown", None)) is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(shutdown(), 10)

    try:
        client.loop.run_until_complete(shut_down())
        engines.dispose(client.loop)
    finally:
        client.loop.close()


def _leave_recorder(flavor: Flavor) -> None:
    """Leave the request recorder if the stack has not, and forget it (``--llama-inference``).

    Before 0.4.3 nothing leaves it at a stop: its patches outlived the stack, and the
    interpreter's exit undid them too late to import what it restores (an ``ImportError``
    after the run). From 0.4.3 ``Stack.shutdown`` leaves it but keeps the finished context
    in the module, where the next stack of the process found it. Leaving a context twice
    does nothing: its generator has finished.
    """
    stack: Any = import_quietly(f"{flavor.core}.stack")
    context = getattr(stack, "TEST_RECORDING_CONTEXT", None)
    if context is None:
        return
    stack.TEST_RECORDING_CONTEXT = None
    with contextlib.suppress(Exception):  # as the stack's own shutdown: logged, not raised
        context.__exit__(None, None, None)


def _write_completions_inline(flavor: Flavor, client: Any) -> None:
    """Make the inference store write each chat completion as it comes, as on SQLite.

    On any other SQL backend (Postgres) llama-stack's inference store hands writes to
    worker tasks that run forever; its library client, whose loop runs only during a call,
    waits after each call for every task on that loop: the first chat completion never
    returns. (OGX's loop runs in a thread of its own and waits for none.)
    """
    if flavor.threaded_loop:
        return
    router = client.async_client.impls.get(flavor.api("Api").inference)
    store = getattr(router, "store", None)
    if getattr(store, "enable_write_queue", False):
        store.enable_write_queue = False  # type: ignore[union-attr]


def _finish_background_writes(flavor: Flavor, loop: asyncio.AbstractEventLoop) -> None:
    """Let the writes a request left running finish before the stack shuts down.

    OGX's inference router stores each chat completion in a task of its own, after the
    answer went back. Stopped at once, its loop closes under that task: the completion is
    never stored, and the store's aiosqlite thread, finishing the write, calls into the
    closed loop ("Event loop is closed", a ``PytestUnhandledThreadExceptionWarning`` that
    fails a ``-W error`` run). Bounded: a write that hangs does not hang the suite.
    """
    names = set(flavor.background_writes)
    if not names or not loop.is_running():
        return

    async def finish() -> None:
        pending = [
            task
            for task in asyncio.all_tasks()
            if getattr(task.get_coro(), "__qualname__", None) in names
        ]
        if pending:
            await asyncio.wait(pending, timeout=10)

    with contextlib.suppress(Exception):
        flavor.run(loop, finish())


class LibraryBackend:
    """A stack in this process, called through its routing tables."""

    mode: ClassVar[str] = "library"

    def __init__(self) -> None:
        self.client: Any = None
        self.base_url: str | None = None
        self._flavor: Flavor | None = None
        self._engines: EngineTracker | None = None

    def start(self, spec: StartSpec) -> None:
        if (other := live.library()) is not None:
            path, stack = other
            raise StackError(
                f"a library stack is already running in this process (store {path}, "
                f"{stack.label or 'no label'}): {spec.flavor.name} keeps its storage in "
                "process globals, so two would share state. Use one stack per test, stop "
                "the other first, or --llama-stack-mode=server."
            )
        self._flavor = spec.flavor
        if spec.recording is not None:
            spec.recording.install_here()
        try:
            self._engines = EngineTracker(spec.flavor)
            self.client = _new_client(spec)
            _write_completions_inline(spec.flavor, self.client)
        except StackNotInstalledError:
            raise
        except Exception as exc:
            if self._engines is not None:
                loop = asyncio.new_event_loop()
                try:
                    self._engines.dispose(loop)
                finally:
                    loop.close()
            _close_storage(spec.flavor)
            _reset_globals(spec.flavor)
            raise StackError(
                f"{spec.config.path}: the stack did not start: {type(exc).__name__}: {exc}"
            ) from None

    def stop(self) -> None:
        client, self.client = self.client, None
        if client is None or self._flavor is None:
            return
        engines = self._engines or EngineTracker(self._flavor)
        _finish_background_writes(self._flavor, client.loop)
        try:
            if self._flavor.library_stop == "impls":
                _shut_down_impls(self._flavor, client, engines)
            else:
                engines.dispose(client.loop)
                client.shutdown()
        finally:
            # OGX's atexit hook would keep this whole stack alive until exit.
            if self._flavor.library_stop == "shutdown":
                atexit.unregister(client.shutdown)
            _leave_recorder(self._flavor)
            _reset_globals(self._flavor)
            rebase_config_dirs(self._flavor.core)  # back to the process's own

    def release(self, wait: bool = True) -> None:
        """The stack is stopped in this process: there is no process to wait for."""
        self.stop()

    # -- the routing table behind the APIs ------------------------------------------------

    def _api(self, name: str) -> Any:
        assert self._flavor is not None
        return self._flavor.api(name)

    def _run(self, coro: Any) -> Any:
        assert self._flavor is not None
        with self._flavor.quiet_mcp_client():
            return self._flavor.run(self.client.loop, coro)

    def _tool_groups(self) -> Any:
        return self.client.async_client.impls[self._api("Api").tool_groups]

    def toolgroups(self) -> list[ToolgroupRecord]:
        data = self._run(self._tool_groups().list_tool_groups()).data
        return [ToolgroupRecord.from_value(tg.model_dump(mode="json")) for tg in data]

    def register(self, seed: ToolgroupSeed) -> None:
        self._run(
            self._tool_groups().register_tool_group(
                toolgroup_id=seed.toolgroup_id,
                provider_id=seed.provider_id,
                mcp_endpoint=self._api("URL")(uri=seed.mcp_endpoint) if seed.mcp_endpoint else None,
                args=dict(seed.args) if seed.args is not None else None,
            )
        )

    def unregister(self, toolgroup_id: str) -> None:
        routing = self._tool_groups()
        self._run(routing.unregister_toolgroup(toolgroup_id))
        # llama-stack (and OGX) leave the group's tools in the class-level index.
        index = type(routing)
        for tool in index.toolgroups_to_tools.pop(toolgroup_id, []):
            name = getattr(tool, self._flavor.tool_name_key)  # type: ignore[union-attr]
            if index.tool_to_toolgroup.get(name) == toolgroup_id:
                del index.tool_to_toolgroup[name]

    def tools(self, toolgroup_id: str | None) -> list[dict[str, Any]]:
        """The handler behind the list-tools route, called directly: OGX 1.5's route
        fails (its admin API is built without the toolgroups dependency), the handler
        does not."""
        data = self._run(self._list_tools(toolgroup_id))
        return [tool.model_dump(mode="json") for tool in data.data]

    def _list_tools(self, toolgroup_id: str | None) -> Any:
        """The routing table's ``list_tools`` coroutine: by request from 0.7, by keyword before."""
        assert self._flavor is not None
        routing = self._tool_groups()
        if self._flavor.list_tools_request:
            return routing.list_tools(self._api("ListToolsRequest")(toolgroup_id=toolgroup_id))
        return routing.list_tools(toolgroup_id=toolgroup_id)

    def invoke_tool(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """The tool runtime's ``invoke_tool``, the call an agent's turn makes.

        It finds a tool's toolgroup only in the index that listing tools fills, so a tool
        not listed yet is listed first, as an agent would.
        """
        routing = self._tool_groups()
        index = type(routing).tool_to_toolgroup
        if name not in index:
            self._run(self._list_tools(None))
        if name not in index:
            raise StackError(
                f"invoke_tool({name!r}): the stack has no such tool "
                f"(it lists: {', '.join(sorted(index)) or 'none'})"
            )
        runtime = self.client.async_client.impls[self._api("Api").tool_runtime]
        try:
            result = self._run(runtime.invoke_tool(tool_name=name, kwargs=arguments))
        except Exception as exc:
            raise StackError(f"invoke_tool({name!r}): {type(exc).__name__}: {exc}") from None
        return dict(result.model_dump(mode="json"))
