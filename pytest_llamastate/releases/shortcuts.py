"""Which library-client shortcuts each release allows (issue 23; ``stack/shortcuts.py``
applies them and says what each one does).

- ``httpx-tls``: the stainless client's httpx wrappers share one TLS context per process;
- ``lazy-rest-tls``: the OpenAPI client's REST object builds its TLS context when used;
- ``route-table``: the route table is built once per config and rebound per stack;
- ``sql-schema``: a fresh store's SQLite schema is created in one script, and the SQL
  stores skip the steps it already covers;
- ``config-once``: the run config's YAML is parsed once per text, each stack a copy.

Only releases whose internals were read and whose suite passed with them are listed:
any other runs its client as its users do, and the header says so.

A forked server (``stack/forkserver.py``) takes its own shortcuts from its zygote
(``stack/readymade.py`` says what each does): ``prebuilt-routers`` (FastAPI routers and
their request handlers built once in the zygote, bound by each child to its own
implementations and app), ``config-once`` and ``versions-once`` (the run config's YAML
parsed, package versions read, once per zygote), ``batched-log-levels`` (the stack's
logging set-up clears the loggers' caches once) and ``uncolored-log-lines`` (a log written
to a file is not highlighted: the same text). With ``sql-schema`` its SQL stores skip what
the store's files have, too, until it listens (``stack/schemaskip.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, TypeVar

from packaging.version import Version

if TYPE_CHECKING:
    from .flavor import Flavor, FlavorName

__all__ = [
    "LIBRARY_SHORTCUTS",
    "SERVER_SHORTCUTS",
    "ServerShortcut",
    "Shortcut",
    "library_shortcuts",
    "server_shortcuts",
    "sql_store_module",
]

Shortcut = Literal["httpx-tls", "lazy-rest-tls", "route-table", "sql-schema", "config-once"]
ServerShortcut = Literal[
    "prebuilt-routers", "config-once", "versions-once", "batched-log-levels", "uncolored-log-lines"
]
_T = TypeVar("_T", bound=str)

#: Per flavor, ``(first release, its shortcuts)`` rows in ascending order; a release
#: gets the last row at or below it.
LIBRARY_SHORTCUTS: dict[FlavorName, tuple[tuple[str, frozenset[Shortcut]], ...]] = {
    "llama-stack": (
        ("0.2", frozenset({"httpx-tls", "route-table", "sql-schema", "config-once"})),
        ("0.8", frozenset()),
    ),
    "ogx": (
        ("0.8", frozenset({"httpx-tls", "route-table", "sql-schema", "config-once"})),
        ("1.5", frozenset({"lazy-rest-tls", "route-table", "sql-schema", "config-once"})),
        ("1.6", frozenset()),
    ),
}


#: The same for forked servers, on the releases whose suite passed with them; routers
#: from the releases that build them through ``fastapi_router_registry`` (0.4, OGX).
_ANY_SERVER = frozenset[ServerShortcut](
    {"config-once", "versions-once", "batched-log-levels", "uncolored-log-lines"}
)
_SERVER = _ANY_SERVER | frozenset[ServerShortcut]({"prebuilt-routers"})
SERVER_SHORTCUTS: dict[FlavorName, tuple[tuple[str, frozenset[ServerShortcut]], ...]] = {
    "llama-stack": (("0.2", _ANY_SERVER), ("0.4", _SERVER), ("0.8", frozenset())),
    "ogx": (("0.8", _SERVER), ("1.6", frozenset())),
}


def library_shortcuts(flavor: Flavor) -> frozenset[Shortcut]:
    """The shortcuts the installed release of ``flavor`` allows (none if not installed)."""
    return _row(LIBRARY_SHORTCUTS[flavor.name], flavor.version())


def server_shortcuts(flavor: Flavor) -> frozenset[ServerShortcut]:
    """The shortcuts a forked server of the installed release takes from its zygote."""
    return _row(SERVER_SHORTCUTS[flavor.name], flavor.version())


def _row(rows: tuple[tuple[str, frozenset[_T]], ...], installed: str | None) -> frozenset[_T]:
    """The shortcuts of the last row at or below ``installed`` (none if not installed)."""
    found: frozenset[_T] = frozenset()
    for first, shortcuts in rows:
        if installed is not None and Version(installed) >= Version(first):
            found = shortcuts
    return found


def sql_store_module(flavor: Flavor) -> str:
    """The module of the release's ``SqlAlchemySqlStoreImpl`` (``sql-schema`` wraps its
    schema steps): under ``providers/utils`` up to llama-stack 0.3, ``core/storage`` after."""
    if flavor.name == "llama-stack" and Version(flavor.version() or "0.7") < Version("0.4"):
        return f"{flavor.package}.providers.utils.sqlstore.sqlalchemy_sqlstore"
    return f"{flavor.core}.storage.sqlstore.sqlalchemy_sqlstore"
