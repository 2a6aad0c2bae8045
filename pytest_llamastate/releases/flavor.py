"""Llama Stack and OGX (its new name): everything the plugin does differently for each.

Llama Stack was renamed OGX at 0.8.0 (new package, CLI, client, home, variable prefix);
each difference is a field of a :class:`Flavor`, and what differs by release line comes
from the timeline in :mod:`.lines`. Code reads fields, never a name.

Nothing here imports either package (that takes seconds, and a run that only uses
``llama_store`` should not pay for it): detection reads installed distributions' metadata.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import warnings
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from importlib import metadata, resources
from pathlib import Path
from typing import Any, Literal

from . import lines as release_lines
from .install import install_command
from .lines import Recorder

__all__ = [
    "FLAVORS",
    "FLAVOR_CHOICES",
    "LLAMA_STACK",
    "OGX",
    "Flavor",
    "FlavorChoice",
    "FlavorName",
    "Recorder",
    "by_name",
    "detect",
    "import_quietly",
    "installed_versions",
]

FlavorName = Literal["llama-stack", "ogx"]
FlavorChoice = Literal["auto", "llama-stack", "ogx"]
FLAVOR_CHOICES: tuple[FlavorChoice, ...] = ("auto", "llama-stack", "ogx")


@dataclass(frozen=True)
class Flavor:
    """One distribution of the stack at one release line: its names, and how to drive it.

    The fields from ``format`` on differ by release line; they come from the release table
    (:mod:`.lines`), resolved once for the installed release by :func:`detect`.
    """

    name: FlavorName
    #: Distribution name for ``importlib.metadata`` (versions, detection).
    distribution: str
    package: str
    #: Class in ``<core>.library_client`` that runs a stack in-process.
    library_client: str
    #: Import name and class of the HTTP client used in server mode.
    client_package: str
    client_class: str
    cli: str
    #: The config/home folder variable, set per store (OGX's CLI moves ~/.llama when unset).
    config_dir_var: str
    #: Setting this turns on the stack's request recorder; unset while a stack starts.
    inference_mode_var: str
    #: The home folder under ``~`` (guarded against writes by tests).
    home: str
    #: The metadata namespace when the run config names none.
    default_namespace: str
    #: Why the list-tools route answers HTTP 500, when it is a known upstream bug ("" if none).
    tools_route_bug: str
    #: The kv table of a ``kv_postgres`` backend, and its ``expiration`` column's type.
    postgres_kv_table: str
    postgres_kv_expiration: str
    #: The plugin's extra that installs this flavor (``stack``, ``ogx``).
    extra: str
    # -- by release line (see ``release_lines.LINE_FIELDS``) ---------------------------------
    format: str
    core: str
    kvstore_module: str | None
    sqlstore_module: str | None
    api_types: tuple[tuple[str, str], ...]
    library_start: str
    library_stop: str
    sqlalchemy_module: str | None
    logging_hook: str | None
    list_tools_request: bool
    threaded_loop: bool
    background_writes: tuple[str, ...]
    process_state: tuple[str, ...]
    config_template: str
    run_args: tuple[str, ...]
    server_flags: tuple[str, ...]
    toolgroup_api: bool
    tools_path: str
    namespaced_keys: bool
    tool_name_key: str
    recorder: Recorder | None
    limits: tuple[str, ...]
    #: The installed release this was resolved for (``None``: not installed, newest line).
    release: str | None = None
    #: Deprecation warnings (regexes) the stack's own MCP client raises on every call.
    mcp_client_warnings: tuple[str, ...] = ()

    def at(self, release: str | None) -> Flavor:
        """This flavor with every line-specific fact of ``release`` (``None``: newest)."""
        return replace(
            self, release=release, **release_lines.line_facts(self.distribution, release)
        )

    def installed_line(self) -> Flavor:
        """This flavor at its installed release (the newest line when not installed)."""
        return self.at(self.version())

    def describe(self) -> str:
        """``llama-stack 0.2.12 (0.2 flat config)``, for headers and messages."""
        version = self.version()
        if version is None:
            return f"{self.name} not installed"
        newest = release_lines.newer_than_tested(self.distribution, version)
        untested = f", newer than the newest tested {newest}" if newest else ""
        return f"{self.name} {version} ({self.format}{untested})"

    def support_problem(self) -> str | None:
        """One line when the installed release is one the plugin cannot drive."""
        v = self.version()
        return release_lines.support_problem(self.distribution, v) if v else None

    def others(self) -> list[Flavor]:
        """The other flavors that are installed too (``auto`` picked this one)."""
        return [f for f in FLAVORS if f.name != self.name and f.installed()]

    def header_notes(self) -> list[str]:
        """The installed release is unsupported, or what cannot be done on it: one line each."""
        if problem := self.support_problem():
            return [problem]
        if self.version() is None:
            return []
        return [f"{self.name} {self.version()} cannot: {limit}" for limit in self.limits]

    def api(self, name: str) -> Any:
        """An API type (``Api``, ``URL``, ``ListToolsRequest``) from where this line has it."""
        return getattr(import_quietly(dict(self.api_types)[name]), name)

    @property
    def install_hint(self) -> str:
        """How to install this flavor with the plugin, from where the plugin came from."""
        return install_command(self.extra)

    @property
    def library_module(self) -> str:
        return f"{self.core}.library_client"

    @property
    def default_config(self) -> Path:
        """The offline, tool-runtime-only run config shipped with the plugin."""
        files = resources.files("pytest_llamastate") / "configs" / self.config_template
        return Path(str(files))

    @property
    def default_postgres_config(self) -> Path:
        """The same config with its state in the store's Postgres database."""
        return self.default_config.with_name(
            self.config_template.replace(".yaml", "-postgres.yaml")
        )

    def version(self) -> str | None:
        """The installed version, or ``None``: metadata only, nothing imported."""
        return _installed_version(self.distribution)

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

    def registry_namespace(self, configured: str | None, *, prefixed: bool = False) -> str | None:
        """The prefix of registry keys for a run config whose metadata namespace is
        ``configured`` (``None`` when the config names none), or ``None`` for no prefix.

        ``prefixed``: the storage backend's kv table prefixes keys in both flavors (as
        ``kv_postgres`` does); llama-stack's ``kv_sqlite`` does not.
        """
        if not (self.namespaced_keys or prefixed):
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
    library_client="LlamaStackAsLibraryClient",
    client_package="llama_stack_client",
    client_class="LlamaStackClient",
    cli="llama",
    config_dir_var="LLAMA_STACK_CONFIG_DIR",
    inference_mode_var="LLAMA_STACK_TEST_INFERENCE_MODE",
    home=".llama",
    default_namespace="registry",
    tools_route_bug="",
    postgres_kv_table="llamastack_kvstore",
    postgres_kv_expiration="TIMESTAMP",
    extra="stack",
    # mcp 1.x deprecated streamablehttp_client, which llama-stack 0.7 still calls.
    mcp_client_warnings=(r"Use `streamable_http_client` instead",),
    **release_lines.line_facts("llama-stack", None),
)

OGX = Flavor(
    name="ogx",
    distribution="ogx",
    package="ogx",
    library_client="OGXAsLibraryClient",
    client_package="ogx_client",
    client_class="OgxClient",
    cli="ogx",
    config_dir_var="OGX_CONFIG_DIR",
    inference_mode_var="OGX_TEST_INFERENCE_MODE",
    home=".ogx",
    default_namespace="registry",
    tools_route_bug=(
        "ogx 1.5 builds the admin API that serves this route without its toolgroups "
        "dependency (KeyError: Api.tool_groups), so an OGX server cannot list tools; "
        "use library mode for tools()"
    ),
    postgres_kv_table="ogx_kvstore",
    postgres_kv_expiration="TIMESTAMPTZ",
    extra="ogx",
    **release_lines.line_facts("ogx", None),
)

FLAVORS: tuple[Flavor, ...] = (LLAMA_STACK, OGX)


def detect(choice: str = "auto") -> Flavor:
    """The flavor ``choice`` names, or for ``auto`` the one that is installed.

    With both installed, ``auto`` picks llama-stack: adding ogx to an environment must not
    silently change what an existing suite runs (set ``llama_flavor = ogx`` to switch).
    With neither, it is llama-stack too, so the errors a stack start raises name the
    install command of the package most suites start from. An explicit choice is returned
    even when not installed: stores work without a stack, and a start says what to install.
    """
    if choice == "auto":
        return next((f for f in FLAVORS if f.installed()), LLAMA_STACK).installed_line()
    return by_name(choice).installed_line()


def by_name(name: str) -> Flavor:
    """The flavor called ``name`` (``llama-stack``, ``ogx``), at its newest line."""
    for flavor in FLAVORS:
        if flavor.name == name:
            return flavor
    raise ValueError(f"unknown flavor {name!r}; allowed: {', '.join(FLAVOR_CHOICES)}")


@functools.cache
def _installed_version(distribution: str) -> str | None:
    """Read once per process: a library stack asks several times per start, and reading
    the metadata costs milliseconds; what is installed does not change under a run."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


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
