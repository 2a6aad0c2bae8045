"""The on-disk registry of Llama Stack / OGX: what is in ``kvstore.db`` and how to write it.

A stack keeps every registered resource as one row of ``kvstore(key, value, expiration)``,
key ``distributions:registry:<version>::<type>:<identifier>``, value the resource's JSON.
OGX prefixes every key with the metadata store's namespace (``registry:distributions:...``)
and ignores rows without it. The version changes between releases (v9 -> v10 at 0.3.0,
with no migration), so the format used for *writing* comes from the installed package's
own ``KEY_FORMAT`` and model, plus the run config's namespace; *reading* accepts every
version and namespace found, so a store made by either can be inspected without either
installed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from ..releases import Flavor, detect, import_quietly
from ..storage.sqlite import StoreCorruptError, kv_rows

__all__ = [
    "REGISTRY_MARK",
    "RegistryDiff",
    "RegistryEntry",
    "RegistryFormat",
    "RegistrySnapshot",
    "StoreCorruptError",
    "ToolgroupRecord",
    "installed_format",
    "parse_entries",
    "read_entries",
]

_PREFIX = "distributions:registry"
#: What every registry key contains, whatever its version and namespace.
REGISTRY_MARK = _PREFIX + ":"


@dataclass(frozen=True)
class RegistryFormat:
    """How the installed package names and shapes registry rows."""

    #: The core package of the release whose rows these are (its ``datatypes`` model them).
    core: str
    prefix: str
    version: str
    #: Prefix of every key (OGX: the metadata store's namespace); ``None`` for none.
    namespace: str | None = None

    def key(self, type: str, identifier: str) -> str:
        key = f"{self.prefix}:{self.version}::{type}:{identifier}"
        return f"{self.namespace}:{key}" if self.namespace else key

    def toolgroup_row(
        self,
        toolgroup_id: str,
        provider_id: str,
        mcp_endpoint: str | None = None,
        args: Mapping[str, Any] | None = None,
    ) -> tuple[str, str]:
        """The row the stack's own ``register_tool_group`` would write, built by its model."""
        model = import_quietly(f"{self.core}.datatypes").ToolGroupWithOwner
        value = model(
            identifier=toolgroup_id,
            provider_id=provider_id,
            provider_resource_id=toolgroup_id,
            mcp_endpoint={"uri": mcp_endpoint} if mcp_endpoint else None,
            args=dict(args) if args is not None else None,
        )
        return self.key("tool_group", toolgroup_id), str(value.model_dump_json())


def installed_format(
    flavor: Flavor | None = None, namespace: str | None = None, *, prefixed: bool = False
) -> RegistryFormat:
    """The key format of the installed ``flavor`` (default: detected), read from its source.

    ``namespace`` is the run config's ``storage.stores.metadata.namespace`` (``None``: the
    config names none); it only shapes keys of a flavor (or, ``prefixed``, a kv backend)
    that prefixes them. Raises ``ModuleNotFoundError`` when the flavor is not installed:
    writing rows in a guessed format would produce a store that no stack reads.
    """
    flavor = flavor or detect()
    return _installed_format(flavor, flavor.registry_namespace(namespace, prefixed=prefixed))


@cache
def _installed_format(flavor: Flavor, namespace: str | None) -> RegistryFormat:
    try:
        module = import_quietly(f"{flavor.core}.store.registry")
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            f"{flavor.name} is not installed ({exc.name} missing): {flavor.install_hint}",
            name=exc.name,
        ) from None
    return RegistryFormat(
        flavor.core, str(module.REGISTER_PREFIX), str(module.KEY_VERSION), namespace
    )


@dataclass(frozen=True)
class RegistryEntry:
    """One registered resource, as stored."""

    key: str
    version: str
    type: str
    identifier: str
    value: Mapping[str, Any] = field(compare=True)

    @classmethod
    def parse(cls, key: str, raw: str) -> RegistryEntry | None:
        """``None`` for a key that is not a registry row.

        A kvstore with a ``namespace`` (OGX's) prefixes every key, as in
        ``registry:distributions:registry:v10::tool_group:x``; such rows count too.
        """
        start = key.find(_PREFIX + ":")
        rest = key[start + len(_PREFIX) + 1 :]
        if start < 0 or "::" not in rest:
            return None
        version, _, rest = rest.partition("::")
        type_, _, identifier = rest.partition(":")
        try:
            value = json.loads(raw)
        except (TypeError, ValueError):
            value = {"unparsed": raw}
        return cls(key, version, type_, identifier, value if isinstance(value, dict) else {})


@dataclass(frozen=True)
class ToolgroupRecord:
    """A registered toolgroup: what stores and running stacks both report."""

    identifier: str
    provider_id: str | None
    mcp_endpoint: str | None = None
    args: Mapping[str, Any] | None = None

    @classmethod
    def from_entry(cls, entry: RegistryEntry) -> ToolgroupRecord:
        """The key's identifier stands in when the value has none (or is not JSON)."""
        return cls.from_value({"identifier": entry.identifier, **entry.value})

    @classmethod
    def from_value(cls, value: Mapping[str, Any]) -> ToolgroupRecord:
        endpoint = value.get("mcp_endpoint")
        uri = endpoint.get("uri") if isinstance(endpoint, Mapping) else endpoint
        return cls(
            identifier=str(value.get("identifier", "")),
            provider_id=value.get("provider_id"),
            mcp_endpoint=str(uri) if uri else None,
            args=value.get("args"),
        )


def read_entries(db: Path) -> list[RegistryEntry]:
    """Every registry row of the SQLite file ``db``, sorted by key; ``[]`` when missing."""
    return parse_entries(kv_rows(db, REGISTRY_MARK))


def parse_entries(rows: Iterable[tuple[str, str]]) -> list[RegistryEntry]:
    """The registry rows among ``(key, value)`` rows of any kv table, in their order."""
    return [e for key, value in rows if (e := RegistryEntry.parse(key, value)) is not None]


@dataclass(frozen=True)
class RegistryDiff:
    """What changed in a registry between two snapshots."""

    added: tuple[RegistryEntry, ...] = ()
    removed: tuple[RegistryEntry, ...] = ()
    changed: tuple[tuple[RegistryEntry, RegistryEntry], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    @staticmethod
    def changed_fields(before: RegistryEntry, after: RegistryEntry) -> list[str]:
        """The top-level fields of a changed entry whose values differ, sorted."""
        old, new = before.value, after.value
        return sorted(f for f in old.keys() | new.keys() if old.get(f) != new.get(f))

    def lines(self, *, fields: bool = False) -> list[str]:
        """``+``, ``-`` and ``~`` lines, one per entry, e.g. ``+ tool_group:mcp::calc``.

        ``fields`` adds the changed fields to each ``~`` line: ``~ tool_group:x (args)``.
        """
        changed = [
            f"~ {new.type}:{new.identifier}"
            + (f" ({', '.join(self.changed_fields(old, new))})" if fields else "")
            for old, new in self.changed
        ]
        return (
            [f"+ {e.type}:{e.identifier}" for e in self.added]
            + [f"- {e.type}:{e.identifier}" for e in self.removed]
            + changed
        )

    def __str__(self) -> str:
        return "\n".join(self.lines()) or "(no registry changes)"


@dataclass(frozen=True)
class RegistrySnapshot:
    """The registry of a store at one moment, by key."""

    entries: Mapping[str, RegistryEntry] = field(default_factory=dict)

    def diff(self, later: RegistrySnapshot) -> RegistryDiff:
        """What ``later`` added, removed and changed relative to this snapshot."""
        before, after = self.entries, later.entries
        return RegistryDiff(
            added=tuple(after[k] for k in sorted(after.keys() - before.keys())),
            removed=tuple(before[k] for k in sorted(before.keys() - after.keys())),
            changed=tuple(
                (before[k], after[k])
                for k in sorted(after.keys() & before.keys())
                if before[k].value != after[k].value
            ),
        )
