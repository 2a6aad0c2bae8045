"""Every release line of Llama Stack and OGX the plugin drives, as data.

Between llama-stack 0.2 and OGX 1.5 the internals the plugin touches moved many times: the
core package (``llama_stack.distribution`` until 0.2.16), the storage modules, the API
types (their own package from 0.4), the run config's format, the library client's start-up,
the CLI and its flags, the toolgroup API. Each move is one line of a timeline below, at the
release that made it; the installed release (read from package metadata, never by trying
imports) picks every fact at once. Supporting the next release is adding a line.

Stdlib only (and :mod:`.tested`, the releases the suite runs on): importing it costs nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from .tested import TESTED, Tested, Version, parse_version

__all__ = [
    "LINE_FIELDS",
    "REGISTRY_FILES",
    "TIMELINES",
    "Recorder",
    "line_facts",
    "support_problem",
]


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


#: The registry database of a store, by the name releases give it: the plugin's configs and
#: llama-stack 0.3+ say ``kvstore.db``, 0.2's distributions ``registry.db``.
REGISTRY_FILES = ("kvstore.db", "registry.db")

#: What each line-specific field means (every timeline's first entry sets them all).
LINE_FIELDS: Mapping[str, str] = {
    "format": "the run config format, named in the header",
    "core": "the core package (``Stack``, ``library_client``, ``store.registry``, ``datatypes``)",
    "kvstore_module": "the module with ``shutdown_kvstore_backends`` (None: no such call)",
    "sqlstore_module": "the module with ``shutdown_sqlstore_backends`` (None: no such call)",
    "api_types": "``(name, module)``: where ``Api``, ``URL``, ``ListToolsRequest`` are",
    "library_start": "how a library client starts: ``constructor`` (it initialises itself), "
    "``initialize`` (its caller initialises it on its loop), ``own-loop`` (the caller gives "
    "it a loop too: it has none)",
    "library_stop": "how a library client stops: ``shutdown`` (its own), ``impls`` (it has "
    "none before 0.4.3: each API's implementation is shut down and its loop closed)",
    "sqlalchemy_module": "the SQL store module whose engines leak (up to 0.5; None: none)",
    "logging_hook": "the library client's module-level logging set-up, silenced while it starts",
    "list_tools_request": "whether ``list_tools`` takes a ``ListToolsRequest`` (else a keyword)",
    "threaded_loop": "whether the library client's loop runs in a thread of its own",
    "background_writes": "coroutines (qualified names) a request leaves running on a threaded "
    "loop, finished before a library stack stops (else lost, with warnings)",
    "process_state": "what the line keeps at class or module level that one library stack "
    "would carry into the next: ``module:attribute.path``, each emptied around every stack",
    "config_template": "the plugin's offline run config for the line (in ``configs/``)",
    "run_args": "the CLI's words before the config path",
    "server_flags": "flags the server needs after ``--port``",
    "toolgroup_api": "whether the release serves ``/v1/toolgroups`` and ``client.toolgroups``",
    "tools_path": "the HTTP route that lists tools",
    "namespaced_keys": "whether the SQLite kvstore prefixes keys with the store's namespace",
    "tool_name_key": "the key naming a tool in the list-tools answer",
    "recorder": "the request recorder (:class:`Recorder`; None: none the plugin can drive)",
    "limits": "what the plugin cannot do on this line, one sentence each",
}


def _api_types(package: str) -> tuple[tuple[str, str], ...]:
    """Every API type from one package (llama-stack 0.4+, OGX)."""
    return tuple((name, package) for name in ("Api", "URL", "ListToolsRequest"))


# Process-level state, found by reading each line's routing tables, registries and provider
# modules (``core.``: the line's core package; what is left alone and why: reliability.md).
#: Tools per toolgroup id, listed once: a later stack's same toolgroup id lists them. Every line.
_TOOL_INDEX = (
    "core.routing_tables.toolgroups:ToolGroupsRoutingTable.toolgroups_to_tools",
    "core.routing_tables.toolgroups:ToolGroupsRoutingTable.tool_to_toolgroup",
)
#: Providers whose models were listed, once per process (llama-stack 0.2.16 on, OGX until
#: 1.4 made it per stack): a later stack on a fresh store lists none of their models.
_LISTED_MODELS = ("core.routing_tables.models:ModelsRoutingTable.listed_providers",)
#: The MCP transport found per URL (0.2.16 on): a later test may reuse the port for another.
_MCP_TRANSPORTS = ("providers.utils.tools.mcp:protocol_cache",)

#: llama-stack's recorder from 0.3: it patches the Ollama client (only ``[starter]``
#: installs it), and a server restores the test id from the header only when told it is one.
_LLAMA_STACK_RECORDER = Recorder(
    module="llama_stack.testing.api_recorder",
    context_module="llama_stack.core.testing_context",
    dir_var="LLAMA_STACK_TEST_RECORDING_DIR",
    header="X-LlamaStack-Provider-Data",
    server_var=("LLAMA_STACK_TEST_STACK_CONFIG_TYPE", "server"),
    needs=("ollama",),
)
#: OGX's from 0.8: as llama-stack's, renamed, and aiohttp and the PDF processor too.
_OGX_RECORDER = Recorder(
    module="ogx.testing.api_recorder",
    context_module="ogx.core.testing_context",
    dir_var="OGX_TEST_RECORDING_DIR",
    header="X-OGX-Provider-Data",
    server_var=("OGX_TEST_STACK_CONFIG_TYPE", "server"),
    needs=("ollama", "aiohttp", "chardet", "pypdf"),
)

#: ``(first release, facts that changed there)``, oldest first; a fact holds until a later
#: line changes it. The first line of each sets every field of ``LINE_FIELDS``.
TIMELINES: Mapping[str, tuple[tuple[Version, Mapping[str, Any]], ...]] = {
    "llama-stack": (
        (
            (0, 2, 12),
            {
                "format": "0.2 flat config",
                "core": "llama_stack.distribution",
                "kvstore_module": None,
                "sqlstore_module": None,
                "api_types": (
                    ("Api", "llama_stack.providers.datatypes"),
                    ("URL", "llama_stack.apis.common.content_types"),
                ),
                "library_start": "own-loop",
                "library_stop": "impls",
                "sqlalchemy_module": "llama_stack.providers.utils.sqlstore.sqlalchemy_sqlstore",
                "logging_hook": None,
                "list_tools_request": False,
                "threaded_loop": False,
                "background_writes": (),
                "process_state": _TOOL_INDEX,
                "config_template": "minimal-0.2.yaml",
                "run_args": ("stack", "run"),
                "server_flags": (),
                "toolgroup_api": True,
                "tools_path": "/v1/tools",
                "namespaced_keys": False,
                "tool_name_key": "identifier",  # a tool was a Resource (``Tool``) up to 0.2
                # 0.2.17-0.2.24 had testing/inference_recorder.py, without a test context.
                "recorder": None,
                "limits": (
                    "no Postgres stores (the plugin's Postgres configs use the 0.3+ storage "
                    "section)",
                    "record or replay inference (no request recorder before 0.3)",
                ),
            },
        ),
        ((0, 2, 16), {"process_state": _TOOL_INDEX + _LISTED_MODELS + _MCP_TRANSPORTS}),
        ((0, 2, 17), {"core": "llama_stack.core", "library_start": "initialize"}),
        ((0, 2, 19), {"library_start": "constructor"}),
        (
            (0, 3, 0),
            {
                "format": "0.3 storage section",
                "logging_hook": "setup_logging",
                "config_template": "minimal-0.3.yaml",
                "tool_name_key": "name",
                "recorder": _LLAMA_STACK_RECORDER,
                "limits": (),
            },
        ),
        (
            (0, 4, 0),
            {
                "format": "0.4 config.yaml, llama_stack_api",
                "sqlalchemy_module": "llama_stack.core.storage.sqlstore.sqlalchemy_sqlstore",
                "config_template": "minimal-0.4.yaml",
                "api_types": _api_types("llama_stack_api"),
            },
        ),
        (
            (0, 4, 3),
            {
                "library_stop": "shutdown",
                "kvstore_module": "llama_stack.core.storage.kvstore.kvstore",
                "sqlstore_module": "llama_stack.core.storage.sqlstore.sqlstore",
            },
        ),
        ((0, 5, 0), {"format": "0.5 distro_name, connectors", "config_template": "minimal.yaml"}),
        (
            (0, 6, 0),
            {
                "sqlalchemy_module": None,
                # Rerank posts are recorded too, through aiohttp.
                "recorder": replace(_LLAMA_STACK_RECORDER, needs=("ollama", "aiohttp")),
            },
        ),
        ((0, 7, 0), {"format": "0.7 no toolgroup API", "list_tools_request": True,
                     "toolgroup_api": False}),
    ),
    "ogx": (
        (
            (0, 8, 0),
            {
                "format": "OGX 0.8",
                "core": "ogx.core",
                "kvstore_module": "ogx.core.storage.kvstore.kvstore",
                "sqlstore_module": "ogx.core.storage.sqlstore.sqlstore",
                "api_types": _api_types("ogx_api"),
                "library_start": "constructor",
                "library_stop": "shutdown",
                "sqlalchemy_module": None,
                "logging_hook": "setup_logging",
                "list_tools_request": True,
                "threaded_loop": False,
                "background_writes": (),
                "process_state": _TOOL_INDEX + _LISTED_MODELS + _MCP_TRANSPORTS,
                "config_template": "minimal.yaml",
                "run_args": ("stack", "run"),
                "server_flags": (),
                "toolgroup_api": False,
                "tools_path": "/v1/tools",
                "namespaced_keys": False,
                "tool_name_key": "name",
                "recorder": _OGX_RECORDER,
                "limits": (),
            },
        ),
        (
            (1, 0, 0),
            {
                "format": "OGX 1.x",
                "config_template": "minimal-ogx.yaml",
                "run_args": ("run",),
                "threaded_loop": True,
                # The inference router stores a chat completion in a task of its own.
                "background_writes": ("InferenceStore.store_chat_completion",),
                "namespaced_keys": True,
                "tools_path": "/v1/admin/tools",
            },
        ),
        ((1, 1, 0), {"server_flags": ("--insecure",)}),
        ((1, 4, 0), {"process_state": _TOOL_INDEX + _MCP_TRANSPORTS}),
        # The test id is read from the header in every mode, and the Ollama client is no
        # longer patched. (1.0.4 still did both; the releases between were not read: a
        # server variable set and a package required where unneeded do no harm.)
        (
            (1, 5, 0),
            {
                "recorder": replace(
                    _OGX_RECORDER, server_var=None, needs=("aiohttp", "chardet", "pypdf")
                )
            },
        ),
    ),
}  # fmt: skip


def line_facts(distribution: str, version: str | None) -> dict[str, Any]:
    """Every line-specific fact of ``distribution`` at ``version``.

    ``None`` (not installed) gets the newest line's facts (what an install brings); a
    release older than the first line gets the first line's, and ``support_problem`` says
    that it is not supported.
    """
    timeline = TIMELINES[distribution]
    facts: dict[str, Any] = dict(timeline[0][1])
    wanted = parse_version(version) if version else (sys.maxsize,)
    for first, changes in timeline[1:]:
        if wanted >= first:
            facts.update(changes)
    return facts


def _tested(distribution: str) -> list[Tested]:
    return [t for t in TESTED if t.distribution == distribution]


def supported_range(distribution: str) -> str:
    """``0.2.12 to 0.7.3``: the oldest and newest release the suite runs on."""
    tested = _tested(distribution)
    return f"{tested[0].version} to {tested[-1].version}"


def support_problem(distribution: str, version: str) -> str | None:
    """Why the installed ``version`` cannot be driven (one line), or ``None``."""
    oldest = TIMELINES[distribution][0][0]
    if parse_version(version) >= oldest:
        return None
    ranges = " and ".join(f"{d} {supported_range(d)}" for d in TIMELINES)
    newest = _tested(distribution)[-1]
    return (
        f"{distribution} {version} is installed; pytest-llamastate supports {ranges}: "
        f"{newest.install}"
    )


def newer_than_tested(distribution: str, version: str) -> str | None:
    """The newest tested release, when ``version`` is newer (it runs, but untested)."""
    newest = _tested(distribution)[-1]
    return newest.version if parse_version(version) > parse_version(newest.version) else None
