"""Llama Stack and OGX (its new name): everything the plugin does differently for each.

Llama Stack was renamed OGX at 0.8.0: a new package, CLI, client, home folder and
variable prefix, registry keys prefixed with a namespace, a library client whose event
loop runs in a thread of its own, and a server that wants TLS unless told otherwise.
Rather than branch on a name all over the code, each difference is one field of a
:class:`Flavor`, and the code reads the field: adding the next rename is adding an instance.

Nothing here imports either package (that takes seconds, and a run that only uses
``llama_store`` should not pay for it): detection reads installed distributions' metadata.
"""

from __future__ import annotations

import asyncio
import importlib
import warnings
from collections.abc import Coroutine, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import Any, Literal

from packaging.version import Version

__all__ = [
    "FLAVORS",
    "FLAVOR_CHOICES",
    "LLAMA_STACK",
    "OGX",
    "PROCESS_STATE",
    "Flavor",
    "FlavorChoice",
    "FlavorName",
    "Recorder",
    "detect",
    "import_quietly",
    "installed_versions",
]

FlavorName = Literal["llama-stack", "ogx"]
FlavorChoice = Literal["auto", "llama-stack", "ogx"]
FLAVOR_CHOICES: tuple[FlavorChoice, ...] = ("auto", "llama-stack", "ogx")


@dataclass(frozen=True)
class Recorder:
    """A release's request recorder (``testing/api_recorder.py``): where it is, how it is
    switched on, and how a test's id reaches it. Read by ``inference``; nothing else."""

    #: The recorder module; ``ResponseStorage`` and ``normalize_inference_request`` live there.
    module: str
    #: ``set_test_context`` / ``reset_test_context`` / ``get_test_context`` live here.
    context_module: str
    #: Where recordings go (the recorder's default is inside its own source tree).
    dir_var: str
    #: The header a server restores the test id from (``{"__test_id": ...}``).
    header: str
    #: Variable and value a server needs to read that header (llama-stack only).
    server_var: tuple[str, str] | None
    #: Modules the recorder imports when recording or replaying, and the extra that has them.
    needs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Flavor:
    """One distribution of the stack: its names, and how to drive it."""

    name: FlavorName
    #: Distribution name for ``importlib.metadata`` (versions, detection).
    distribution: str
    #: Import name of the server package (``<package>.core...``).
    package: str
    #: Import name of the API types package (``Api``, ``URL``, ``ListToolsRequest``).
    api_package: str
    #: Class in ``<package>.core.library_client`` that runs a stack in-process.
    library_client: str
    #: Whether that client's event loop runs in a thread of its own (OGX): coroutines are
    #: then submitted to it; otherwise the loop is idle and we run them on it.
    threaded_loop: bool
    #: Import name and class of the HTTP client used in server mode.
    client_package: str
    client_class: str
    #: The CLI, and its arguments before the config path (``llama stack run CFG``).
    cli: str
    run_args: tuple[str, ...]
    #: Extra server flags: OGX refuses to serve plain HTTP without ``--insecure``.
    server_flags: tuple[str, ...]
    #: The variable naming the config/home folder; set per store, so OGX's CLI never
    #: moves a developer's real ``~/.llama`` (it only does so when this is unset).
    config_dir_var: str
    #: Setting this turns on the stack's request recorder; unset while a stack starts.
    inference_mode_var: str
    #: The home folder under ``~`` (guarded against writes by tests).
    home: str
    #: Whether registry keys carry the metadata store's namespace as a prefix
    #: (OGX's kvstores prefix every key; llama-stack 0.7 ignores the namespace).
    namespaced_keys: bool
    #: The metadata namespace when the run config names none.
    default_namespace: str
    #: HTTP route that lists tools (``toolgroup_id`` query parameter).
    tools_path: str
    #: Why that route answers HTTP 500, when it is a known upstream bug ("" if none).
    tools_route_bug: str
    #: File name of the plugin's default run config for this flavor.
    default_config_name: str
    install_hint: str
    #: Deprecation warnings (message regexes) the stack's own MCP client raises on every
    #: tool listing or call: the stack's debt to its dependency, not the user's code.
    mcp_client_warnings: tuple[str, ...] = ()
    #: The request recorder of the installed release (None where it has none).
    recorder: Recorder | None = None

    @property
    def library_module(self) -> str:
        return f"{self.package}.core.library_client"

    @property
    def default_config(self) -> Path:
        """The offline, tool-runtime-only run config shipped with the plugin."""
        files = resources.files("pytest_llamastate") / "configs" / self.default_config_name
        return Path(str(files))

    @property
    def default_postgres_config(self) -> Path:
        """The same config with its state in the store's Postgres database."""
        return self.default_config.with_name(
            self.default_config_name.replace(".yaml", "-postgres.yaml")
        )

    def version(self) -> str | None:
        """The installed version, or ``None``: metadata only, nothing imported."""
        try:
            return metadata.version(self.distribution)
        except metadata.PackageNotFoundError:
            return None

    def installed(self) -> bool:
        return self.version() is not None

    def run_command(self, config: Path, port: int, exe: str | None = None) -> list[str]:
        """The command line that serves ``config`` on ``port`` (``llama stack run ...``)."""
        return [
            exe or self.cli,
            *self.run_args,
            str(config),
            "--port",
            str(port),
            *self.server_flags,
        ]

    def registry_namespace(self, configured: str | None, *, postgres: bool = False) -> str | None:
        """The prefix of registry keys for a run config whose metadata namespace is
        ``configured`` (``None`` when the config names none), or ``None`` for no prefix.

        ``kv_postgres`` prefixes keys in both flavors; llama-stack's ``kv_sqlite`` does not.
        """
        if not (self.namespaced_keys or postgres):
            return None
        return configured or self.default_namespace

    @contextmanager
    def quiet_mcp_client(self) -> Iterator[None]:
        """Ignore ``mcp_client_warnings``, and only those, while the plugin calls the stack.

        Narrow on purpose: by message and category, only around the plugin's own calls,
        so the same warning from the user's code (or the client used directly) still shows.
        llama-stack swallows the warning as an error under ``-W error`` and lists no tools.
        """
        with warnings.catch_warnings():
            for message in self.mcp_client_warnings:
                warnings.filterwarnings("ignore", message=message, category=DeprecationWarning)
            yield

    def run(self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run ``coro`` on a library client's loop and return its result.

        llama-stack's loop is idle between calls, so we run it; OGX's runs forever in its
        own thread, where ``run_until_complete`` would fail, so we submit and wait.
        """
        if self.threaded_loop:
            return asyncio.run_coroutine_threadsafe(coro, loop).result(_CALL_TIMEOUT)
        return loop.run_until_complete(coro)


#: Seconds a call on OGX's loop thread may take (it lists MCP tools over the network).
_CALL_TIMEOUT = 300.0

LLAMA_STACK = Flavor(
    name="llama-stack",
    distribution="llama-stack",
    package="llama_stack",
    api_package="llama_stack_api",
    library_client="LlamaStackAsLibraryClient",
    threaded_loop=False,
    client_package="llama_stack_client",
    client_class="LlamaStackClient",
    cli="llama",
    run_args=("stack", "run"),
    server_flags=(),
    config_dir_var="LLAMA_STACK_CONFIG_DIR",
    inference_mode_var="LLAMA_STACK_TEST_INFERENCE_MODE",
    home=".llama",
    namespaced_keys=False,
    default_namespace="registry",
    tools_path="/v1/tools",
    tools_route_bug="",
    default_config_name="minimal.yaml",
    install_hint="pip install 'pytest-llamastate[stack]'",
    # mcp 1.x deprecated streamablehttp_client, which llama-stack 0.7 still calls.
    mcp_client_warnings=(r"Use `streamable_http_client` instead",),
    # -- the request recorder (0.3 to 0.7; 0.2.17-0.2.24 had testing/inference_recorder.py) --
    recorder=Recorder(
        module="llama_stack.testing.api_recorder",
        context_module="llama_stack.core.testing_context",
        dir_var="LLAMA_STACK_TEST_RECORDING_DIR",
        header="X-LlamaStack-Provider-Data",
        server_var=("LLAMA_STACK_TEST_STACK_CONFIG_TYPE", "server"),
        needs=("ollama",),  # 0.7.3 patches the Ollama client too; only [starter] installs it
    ),
)

OGX = Flavor(
    name="ogx",
    distribution="ogx",
    package="ogx",
    api_package="ogx_api",
    library_client="OGXAsLibraryClient",
    threaded_loop=True,
    client_package="ogx_client",
    client_class="OgxClient",
    cli="ogx",
    run_args=("run",),  # `ogx stack run` still works but warns that it is deprecated
    server_flags=("--insecure",),
    config_dir_var="OGX_CONFIG_DIR",
    inference_mode_var="OGX_TEST_INFERENCE_MODE",
    home=".ogx",
    namespaced_keys=True,
    default_namespace="registry",
    tools_path="/v1/admin/tools",
    tools_route_bug=(
        "ogx 1.5 builds the admin API that serves this route without its toolgroups "
        "dependency (KeyError: Api.tool_groups), so an OGX server cannot list tools; "
        "use library mode for tools()"
    ),
    default_config_name="minimal-ogx.yaml",
    install_hint="pip install 'pytest-llamastate[ogx]'",
    # -- the request recorder (OGX 1.5 reads the test id from the header in every mode) --
    recorder=Recorder(
        module="ogx.testing.api_recorder",
        context_module="ogx.core.testing_context",
        dir_var="OGX_TEST_RECORDING_DIR",
        header="X-OGX-Provider-Data",
        server_var=None,
        needs=("aiohttp", "chardet", "pypdf"),  # it patches aiohttp and the PDF processor
    ),
)

FLAVORS: tuple[Flavor, ...] = (LLAMA_STACK, OGX)

# -- Process-level state of each release (issue 18) --------------------------------------

#: What a release keeps at class or module level that carries one library stack's state
#: into the next stack of the same process: ``module:attribute.path`` under the flavor's
#: package, each a container the library backend empties before and after every stack.
#: Found by reading each release's routing tables, registries and provider modules (class
#: attributes, module globals, caches); a stack's own start resets the rest (storage
#: backends, the job runtime, tenancy). An entry a release lacks has nothing to clear.
PROCESS_STATE: Mapping[FlavorName, tuple[str, ...]] = {
    "llama-stack": (
        # 0.7.3: providers whose models were listed once per process, not per stack: a
        # later stack on a fresh store lists none of their models (OGX 1.5: per stack).
        "core.routing_tables.models:ModelsRoutingTable.listed_providers",
        # Tools per toolgroup id, listed once: a later stack's toolgroup of the same id
        # (another endpoint) would list the first one's tools.
        "core.routing_tables.toolgroups:ToolGroupsRoutingTable.toolgroups_to_tools",
        "core.routing_tables.toolgroups:ToolGroupsRoutingTable.tool_to_toolgroup",
        # The MCP transport found per URL; a later test may reuse a port for another server.
        "providers.utils.tools.mcp:protocol_cache",
    ),
    "ogx": (
        "core.routing_tables.toolgroups:ToolGroupsRoutingTable.toolgroups_to_tools",
        "core.routing_tables.toolgroups:ToolGroupsRoutingTable.tool_to_toolgroup",
        "providers.utils.tools.mcp:protocol_cache",
    ),
}


def detect(choice: str = "auto") -> Flavor:
    """The flavor ``choice`` names, or for ``auto`` the one that is installed.

    With both installed, ``auto`` picks llama-stack: adding ogx to an environment must not
    silently change what an existing suite runs (set ``llama_flavor = ogx`` to switch).
    With neither, it is llama-stack too, so the errors a stack start raises name the
    install command of the package most suites start from. An explicit choice is returned
    even when not installed: stores work without a stack, and a start says what to install.
    """
    if choice == "auto":
        return next((f for f in FLAVORS if f.installed()), LLAMA_STACK)
    for flavor in FLAVORS:
        if flavor.name == choice:
            return flavor
    raise ValueError(f"unknown flavor {choice!r}; allowed: {', '.join(FLAVOR_CHOICES)}")


def installed_versions() -> str:
    """``llama-stack=0.7.3,ogx=None``: what stored state depends on (registry keys and
    table shapes change between releases), for fingerprints of persistent stores and
    templates."""
    return ",".join(f"{f.distribution}={f.version()}" for f in FLAVORS)


def import_quietly(name: str) -> Any:
    """Import a module of the stack (or its client) with import-time warnings ignored.

    Both packages emit deprecation warnings while importing (OGX 1.5: ``httpx`` status
    names); under ``-W error`` those would fail the test for code that is not the user's.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module(name)


# -- Library-client shortcuts per release (issue 23; applied by stack/shortcuts.py) --------

#: What the plugin's library clients may skip on a release (``stack/shortcuts.py`` says
#: what each one does): ``httpx-tls`` (stainless client: one TLS context per process),
#: ``lazy-rest-tls`` (OpenAPI client: a TLS context only when used), ``route-table``
#: (the route table built once per config, rebound per stack).
Shortcut = Literal["httpx-tls", "lazy-rest-tls", "route-table"]

#: Per flavor, ``(first release, its shortcuts)`` rows in ascending order; a release
#: gets the last row at or below it. Only releases whose internals were read and whose
#: suite passed with them are listed: any other runs its client as its users do.
LIBRARY_SHORTCUTS: dict[FlavorName, tuple[tuple[str, frozenset[Shortcut]], ...]] = {
    "llama-stack": (("0.7", frozenset({"httpx-tls", "route-table"})), ("0.8", frozenset())),
    "ogx": (("1.5", frozenset({"lazy-rest-tls", "route-table"})), ("1.6", frozenset())),
}


def library_shortcuts(flavor: Flavor) -> frozenset[Shortcut]:
    """The shortcuts the installed release of ``flavor`` allows (none if not installed)."""
    if (installed := flavor.version()) is None:
        return frozenset()
    found: frozenset[Shortcut] = frozenset()
    for first, shortcuts in LIBRARY_SHORTCUTS[flavor.name]:
        if Version(installed) >= Version(first):
            found = shortcuts
    return found
