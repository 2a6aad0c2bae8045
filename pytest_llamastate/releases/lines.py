"""Every release line of Llama Stack and OGX the plugin drives, as data.

Between llama-stack 0.2 and OGX 1.5 the internals the plugin touches moved many times: the
core package (``llama_stack.distribution`` until 0.2.16), the storage modules, the API
types (their own package from 0.4), the run config's format, the library client's start-up,
the CLI and its flags, the toolgroup API. Each move is one line of a timeline below, at the
release that made it; the installed release (read from package metadata, never by trying
imports) picks every fact at once. Supporting the next release is adding a line.

Stdlib only, no relative imports: the Makefile runs this file to learn how each tested
release is installed (``python pytest_llamastate/releases/lines.py pins llama-stack-0.2.12``),
so the pins users are told and the pins the suite runs on are one list.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "LINE_FIELDS",
    "REGISTRY_FILES",
    "TESTED",
    "TIMELINES",
    "Tested",
    "Version",
    "line_facts",
    "parse_version",
    "support_problem",
    "tested_release",
]

Version = tuple[int, ...]


def parse_version(text: str) -> Version:
    """``(0, 2, 12)`` from ``0.2.12`` (a pre-release or local suffix is ignored)."""
    found = re.match(r"\d+(?:\.\d+)*", text)
    return tuple(int(part) for part in found.group().split(".")) if found else ()


@dataclass(frozen=True)
class Tested:
    """One release the compatibility suite runs on, installed as its users install it."""

    distribution: str
    version: str
    #: The Python minor version it runs on in the suite (its users' oldest).
    python: str
    #: What to ``pip install`` besides pytest-llamastate, space-separated: pip alone does
    #: not pin the stack's API and client packages (they float to the newest, which the
    #: stack cannot import), nor ``mcp<2`` (mcp 2 breaks llama-stack's and OGX 0.8's MCP
    #: client).
    pins: tuple[str, ...]

    @property
    def install(self) -> str:
        """The shell command that installs it: ``pip install llama-stack==0.2.12 ...``."""
        return "pip install " + " ".join(f"'{p}'" if "<" in p else p for p in self.pins)

    @property
    def slug(self) -> str:
        """``llama-stack-0.2.12``: the name of its venv and its stamp in the Makefile."""
        return f"{self.distribution}-{self.version}"


TESTED: tuple[Tested, ...] = (
    Tested(
        "llama-stack",
        "0.2.12",
        "3.11",
        (
            "llama-stack==0.2.12",
            "llama-stack-client==0.2.12",
            "mcp<2",
        ),
    ),
    Tested(
        "llama-stack",
        "0.2.24",
        "3.12",
        (
            "llama-stack==0.2.24",
            "llama-stack-client==0.2.23",
            "mcp<2",
        ),
    ),
    Tested(
        "llama-stack",
        "0.3.5",
        "3.12",
        (
            "llama-stack==0.3.5",
            "llama-stack-client==0.3.5",
            "mcp<2",
        ),
    ),
    Tested(
        "llama-stack",
        "0.4.7",
        "3.12",
        (
            "llama-stack==0.4.7",
            "llama-stack-api==0.4.7",
            "llama-stack-client==0.4.7",
            "mcp<2",
        ),
    ),
    Tested(
        "llama-stack",
        "0.6.1",
        "3.12",
        (
            "llama-stack==0.6.1",
            "llama-stack-api==0.6.1",
            "llama-stack-client==0.6.1",
            "mcp<2",
        ),
    ),
    Tested(
        "llama-stack",
        "0.7.3",
        "3.12",
        (
            "llama-stack==0.7.3",
            "llama-stack-api==0.7.3",
            "llama-stack-client==0.7.3",
            "mcp<2",
        ),
    ),
    Tested(
        "ogx",
        "0.8.0",
        "3.12",
        (
            "ogx==0.8.0",
            "ogx-api==0.8.0",
            "ogx-client==0.8.0",
            "mcp<2",
        ),
    ),
    Tested(
        "ogx",
        "1.0.4",
        "3.12",
        (
            "ogx==1.0.4",
            "ogx-api==1.0.4",
            "ogx-client==1.0.4",
        ),
    ),
    Tested(
        "ogx",
        "1.5.0",
        "3.12",
        (
            "ogx==1.5.0",
            "ogx-api==1.5.0",
            "ogx-client==1.5.0",
        ),
    ),
)

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
    "process_state": "class- or module-level containers a library stack would pass on: emptied",
    "config_template": "the plugin's offline run config for the line (in ``configs/``)",
    "run_args": "the CLI's words before the config path",
    "server_flags": "flags the server needs after ``--port``",
    "toolgroup_api": "whether the release serves ``/v1/toolgroups`` and ``client.toolgroups``",
    "tools_path": "the HTTP route that lists tools",
    "namespaced_keys": "whether the SQLite kvstore prefixes keys with the store's namespace",
    "recorder_module": "the request recorder's module (None: the release has none)",
    "limits": "what the plugin cannot do on this line, one sentence each",
}


def _api_types(package: str) -> tuple[tuple[str, str], ...]:
    """Every API type from one package (llama-stack 0.4+, OGX)."""
    return tuple((name, package) for name in ("Api", "URL", "ListToolsRequest"))


# Process-level state, read from routing tables, registries, providers: docs/reliability.md.
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
                "process_state": _TOOL_INDEX,
                "config_template": "minimal-0.2.yaml",
                "run_args": ("stack", "run"),
                "server_flags": (),
                "toolgroup_api": True,
                "tools_path": "/v1/tools",
                "namespaced_keys": False,
                "recorder_module": None,
                "limits": (
                    "no Postgres stores (the plugin's Postgres configs use the 0.3+ storage "
                    "section)",
                    "state templates are not built (llama_template needs the 0.3+ storage "
                    "section)",
                ),
            },
        ),
        ((0, 2, 16), {"process_state": _TOOL_INDEX + _LISTED_MODELS + _MCP_TRANSPORTS}),
        ((0, 2, 17), {"core": "llama_stack.core", "library_start": "initialize",
                      "recorder_module": "llama_stack.testing.inference_recorder"}),
        ((0, 2, 19), {"library_start": "constructor"}),
        (
            (0, 3, 0),
            {
                "format": "0.3 storage section",
                "logging_hook": "setup_logging",
                "config_template": "minimal-0.3.yaml",
                "recorder_module": "llama_stack.testing.api_recorder",
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
        ((0, 6, 0), {"sqlalchemy_module": None}),
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
                "process_state": _TOOL_INDEX + _LISTED_MODELS + _MCP_TRANSPORTS,
                "config_template": "minimal.yaml",
                "run_args": ("stack", "run"),
                "server_flags": (),
                "toolgroup_api": False,
                "tools_path": "/v1/tools",
                "namespaced_keys": False,
                "recorder_module": "ogx.testing.api_recorder",
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
                "namespaced_keys": True,
                "tools_path": "/v1/admin/tools",
            },
        ),
        ((1, 1, 0), {"server_flags": ("--insecure",)}),
        ((1, 4, 0), {"process_state": _TOOL_INDEX + _MCP_TRANSPORTS}),
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


def tested_release(slug: str) -> Tested:
    """The tested release named ``llama-stack-0.2.12``."""
    for tested in TESTED:
        if tested.slug == slug:
            return tested
    raise KeyError(f"no tested release {slug!r}; known: {', '.join(t.slug for t in TESTED)}")


def _main(argv: list[str]) -> int:
    """``pins SLUG`` / ``python SLUG`` / ``slugs``: facts the Makefile builds venvs from."""
    if argv[:1] == ["slugs"]:
        print(" ".join(t.slug for t in TESTED))
        return 0
    if len(argv) == 2 and argv[0] in ("pins", "python"):
        tested = tested_release(argv[1])
        words = [f"'{p}'" for p in tested.pins] if argv[0] == "pins" else [tested.python]
        print(" ".join(words))
        return 0
    print("usage: releases.py slugs | pins SLUG | python SLUG", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
