"""Running a real Llama Stack (or OGX) on a store, one handle for every way to run one.

:class:`LlamaStack` does what every way shares once (the config's path and provider
checks, writing ``stack.yaml``, aligning seed rows, the environment) and hands the rest
to a :class:`~.backend.Backend`: ``library`` (in-process) or ``server`` (a child process).
Both flavors share one code path too: what differs is data of a :class:`~..flavor.Flavor`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..releases import Flavor, detect
from ..state import live
from ..state.registry import ToolgroupRecord
from ..state.seeds import SeedError, ToolgroupSeed
from ..state.stackconfig import StackConfig
from ..state.store import LlamaStore
from .backend import Backend, StackError, StackNotInstalledError, StartSpec
from .container import IMAGE_CONFIG, ContainerBackend, ContainerRuntime
from .engine import ENGINE_CHOICES, EngineError
from .forkserver import ForkServer
from .library import LibraryBackend
from .recording import Recording
from .server import SERVER_PROCESSES, ServerBackend, ServerProcess, log_tail, warm_up

__all__ = [
    "ENGINE_CHOICES",
    "IMAGE_CONFIG",
    "SERVER_PROCESSES",
    "STACK_MODES",
    "ContainerRuntime",
    "EngineError",
    "LlamaStack",
    "LlamaStackFactory",
    "ServerProcess",
    "StackError",
    "StackMode",
    "StackNotInstalledError",
    "default_server_process",
]

StackMode = Literal["library", "server", "container"]
STACK_MODES: tuple[StackMode, ...] = ("library", "server", "container")
_BACKENDS: dict[str, Callable[[LlamaStack], Backend]] = {
    "library": lambda stack: LibraryBackend(),
    "server": lambda stack: ServerBackend(stack.server_process),
    "container": lambda stack: ContainerBackend(stack.container_runtime()),
}


def default_server_process() -> ServerProcess:
    """``fork`` where the platform can fork, else ``exec``."""
    return "fork" if ForkServer.supported() else "exec"


@dataclass
class LlamaStack:
    """A running stack whose every write lands in ``store``.

    ``client`` is the flavor's own client: for llama-stack a ``llama_stack_client``
    client (the library client in library mode, ``LlamaStackClient(base_url)`` in server
    mode), for OGX an ``ogx_client`` one (``OGXAsLibraryClient``, ``OgxClient``).
    """

    store: LlamaStore
    config: StackConfig
    mode: StackMode = "library"
    start_timeout: float = 60.0
    label: str = ""
    flavor: Flavor = field(default_factory=detect)
    #: How a server starts (server mode only): ``fork`` or ``exec``.
    server_process: ServerProcess = field(default_factory=default_server_process)
    #: The engine and image (container mode only).
    container: ContainerRuntime | None = None
    #: The request recorder's settings when ``--llama-inference`` turned it on.
    recording: Recording | None = None
    _backend: Backend = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._backend = _BACKENDS[self.mode](self)

    def container_runtime(self) -> ContainerRuntime:
        if self.container is None:
            raise StackError("container mode needs an image: --llama-stack-image=IMAGE")
        return self.container

    @property
    def client(self) -> Any:
        return self._backend.client

    @property
    def base_url(self) -> str | None:
        return self._backend.base_url

    @property
    def log_path(self) -> Path:
        """Where a server's stdout and stderr go (appended across restarts)."""
        return self.store.log_path

    @property
    def running(self) -> bool:
        return self._backend.client is not None

    def start(self) -> LlamaStack:
        if self.running:
            raise StackError(f"the stack on {self.store.path} is already running")
        if problem := self.flavor.support_problem():
            raise StackNotInstalledError(problem)
        try:
            live.check_start(self.store.path)
        except RuntimeError as exc:
            raise StackError(str(exc)) from None
        self.config.check_paths(self.store.path, self.store.env)
        known = self.config.providers("tool_runtime")
        for seed in self.store.seeds:
            if seed.provider_id not in known:
                raise StackError(
                    f"seeded toolgroup {seed.toolgroup_id!r} names provider "
                    f"{seed.provider_id!r}, which {self.config.path} does not have "
                    f"(tool_runtime providers: {', '.join(known) or 'none'})"
                )
        spec = StartSpec(
            store=self.store,
            config=self.config,
            config_path=self.config.write_to(self.store.config_path),
            flavor=self.flavor,
            start_timeout=self.start_timeout,
            label=self.label,
            recording=self.recording,
            server=self.server_process if self.mode == "server" else None,
        )
        self._align_seed_keys(spec)
        with spec.environment():
            self._backend.start(spec)
        live.add(self.store.path, self)
        return self

    def stop(self) -> None:
        """Stop the stack; safe to call twice."""
        live.remove(self.store.path)
        self._backend.stop()

    def close(self, wait: bool = True) -> None:
        """Stop and release the port: the handle is done for good.

        ``wait=False`` (the ``llama_stack`` fixture's teardown): a server killed at once
        is not waited for. The kernel takes ~10 ms to free it, and until then it still
        holds its SQLite files: what changes a database's journal or checkpoints it
        (a state template's seal) would find it locked; plain reads and writes do not."""
        live.remove(self.store.path)
        self._backend.release(wait=wait)

    def restart(self) -> None:
        """Stop and start again on the same store (and port): what soak tests repeat."""
        self.stop()
        self.start()

    def __enter__(self) -> LlamaStack:
        return self if self.running else self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log_tail(self) -> str:
        return log_tail(self.log_path)

    # -- toolgroups ---------------------------------------------------------------------

    def toolgroups(self) -> list[ToolgroupRecord]:
        """The registered toolgroups, as the stack sees them."""
        self._require_running()
        return self._backend.toolgroups()

    def register_toolgroup(
        self,
        toolgroup_id: str,
        *,
        provider_id: str | None = None,
        mcp_endpoint: str | None = None,
        args: Mapping[str, Any] | None = None,
    ) -> None:
        """Register a toolgroup; an ``mcp::`` id or an endpoint defaults to the MCP provider.

        In server mode this writes the registry row and restarts the server (neither 0.7
        nor OGX has an HTTP route for it), so it costs a restart; seed toolgroups for bulk
        set-up.
        """
        try:  # the same defaults and checks as a seed
            seed = ToolgroupSeed(toolgroup_id, provider_id, mcp_endpoint, args)
        except SeedError as exc:
            raise StackError(f"register_toolgroup: {exc}") from None
        known = self.config.providers("tool_runtime")
        if seed.provider_id not in known:
            raise StackError(
                f"register_toolgroup({toolgroup_id!r}): provider {seed.provider_id!r} is not "
                f"in {self.config.path} (tool_runtime providers: {', '.join(known) or 'none'})"
            )
        self._require_running()
        self._backend.register(seed)

    def unregister_toolgroup(self, toolgroup_id: str) -> None:
        if toolgroup_id not in {tg.identifier for tg in self.toolgroups()}:
            raise StackError(f"unregister_toolgroup({toolgroup_id!r}): no such toolgroup")
        self._backend.unregister(toolgroup_id)

    def tools(self, toolgroup_id: str | None = None) -> list[dict[str, Any]]:
        """The tools of every toolgroup (or of one), as the stack's list-tools API returns
        them: ``GET /v1/tools`` (OGX: ``/v1/admin/tools``) as plain dicts, each with its
        ``name`` (llama-stack 0.2 calls it ``identifier`` only)."""
        self._require_running()
        key = self.flavor.tool_name_key
        return [{"name": tool[key], **tool} for tool in self._backend.tools(toolgroup_id)]

    def invoke_tool(self, tool_name: str, /, **arguments: Any) -> Any:
        """Call a tool as an agent would, and return what it answered.

        One text item comes back as its value (JSON decoded when it is JSON: ``5`` for
        ``add(a=2, b=3)``), several as a list, an image item as its dict; a tool that
        failed raises :class:`StackError` with its message. Library mode only: a server
        has no route for it (the error says what to use instead).
        """
        self._require_running()
        result = self._backend.invoke_tool(tool_name, arguments)
        values = [_content_value(item) for item in _content_items(result.get("content"))]
        if result.get("error_code") or result.get("error_message"):
            said = result.get("error_message") or " ".join(map(str, values))
            raise StackError(f"tool {tool_name!r} failed: {said}")
        return values[0] if len(values) == 1 else values

    # -- internals ----------------------------------------------------------------------

    def _require_running(self) -> None:
        if not self.running:
            raise StackError(f"the stack on {self.store.path} is not running")

    def _align_seed_keys(self, spec: StartSpec) -> None:
        """Move seed rows written under another namespace to the one this stack reads.

        Seeds are written when the store is made, for the session's run config; a test
        whose own config names another metadata namespace would not see them on OGX.
        A seed the test has since unregistered has no row anywhere, so stays gone.
        """
        if not self.store.seeds:
            return
        fmt = spec.registry_format()
        entries = self.store.entries()
        present = {e.key for e in entries}
        moves: dict[str, str | None] = {}
        for seed in self.store.seeds:
            wanted = fmt.key("tool_group", seed.toolgroup_id)
            if wanted in present:
                continue
            for e in entries:
                if (e.type, e.identifier) == ("tool_group", seed.toolgroup_id):
                    moves[wanted], moves[e.key] = json.dumps(dict(e.value)), None
                    break
        if moves:
            self.store.write_registry(moves)


def _content_items(content: object) -> list[object]:
    """A tool result's content is one item, a list of them, or plain text."""
    if content is None:
        return []
    return list(content) if isinstance(content, list) else [content]


def _content_value(item: object) -> Any:
    text = item.get("text") if isinstance(item, dict) and item.get("type") == "text" else item
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


@dataclass
class LlamaStackFactory:
    """Starts stacks for any scope; ``llama_stack`` uses it, and so can your fixtures.

    A module-scoped stack (shared state between the module's tests, one start-up)::

        @pytest.fixture(scope="module")
        def shared_stack(llama_store_factory, llama_stack_factory):
            store = llama_store_factory.mktemp("shared")
            with llama_stack_factory.start(store) as stack:
                yield stack
    """

    mode: StackMode
    config_path: Path
    start_timeout: float = 60.0
    #: Which stack to run (``llama_flavor``); detected when not given.
    flavor: Flavor = field(default_factory=detect)
    server_process: ServerProcess = field(default_factory=default_server_process)
    container: ContainerRuntime | None = None
    #: Set by the plugin when ``--llama-inference`` records or replays.
    recording: Recording | None = None
    _configs: dict[Path, StackConfig] = field(default_factory=dict, repr=False)

    def load_config(self, path: Path | str | None = None) -> StackConfig:
        """Parse a config once per session (the default one when ``path`` is None)."""
        resolved = Path(path or self.config_path).absolute()
        if resolved not in self._configs:
            self._configs[resolved] = StackConfig.load(resolved)
        return self._configs[resolved]

    def start(
        self,
        store: LlamaStore,
        *,
        config: Path | str | StackConfig | None = None,
        mode: StackMode | None = None,
        label: str = "",
    ) -> LlamaStack:
        """Start a stack on ``store``; stop it with ``close()`` or a ``with`` block."""
        stack_config = config if isinstance(config, StackConfig) else self.load_config(config)
        stack = LlamaStack(
            store,
            stack_config,
            mode or self.mode,
            self.start_timeout,
            label,
            self.flavor,
            self.server_process,
            self.container,
            self.recording,
        )
        try:
            stack.start()
        except BaseException:
            stack.close()  # a server half-started, a claimed port: nothing may outlive it
            raise
        return stack

    def warm_up(self) -> None:
        """Get the first server-mode stack ready sooner: import the stack now (fork)."""
        if self.mode == "server":
            warm_up(self.flavor, self.server_process)

    def close_all(self) -> None:
        """Stop every stack of this process that is still running (session end)."""
        for stack in live.running():
            stack.close()
