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
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from packaging.version import Version

if TYPE_CHECKING:
    from .flavor import Flavor, FlavorName

__all__ = ["LIBRARY_SHORTCUTS", "Shortcut", "library_shortcuts", "sql_store_module"]

Shortcut = Literal["httpx-tls", "lazy-rest-tls", "route-table", "sql-schema", "config-once"]

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


def library_shortcuts(flavor: Flavor) -> frozenset[Shortcut]:
    """The shortcuts the installed release of ``flavor`` allows (none if not installed)."""
    if (installed := flavor.version()) is None:
        return frozenset()
    found: frozenset[Shortcut] = frozenset()
    for first, shortcuts in LIBRARY_SHORTCUTS[flavor.name]:
        if Version(installed) >= Version(first):
            found = shortcuts
    return found


def sql_store_module(flavor: Flavor) -> str:
    """The module of the release's ``SqlAlchemySqlStoreImpl`` (``sql-schema`` wraps its
    schema steps): under ``providers/utils`` up to llama-stack 0.3, ``core/storage`` after."""
    if flavor.name == "llama-stack" and Version(flavor.version() or "0.7") < Version("0.4"):
        return f"{flavor.package}.providers.utils.sqlstore.sqlalchemy_sqlstore"
    return f"{flavor.core}.storage.sqlstore.sqlalchemy_sqlstore"
