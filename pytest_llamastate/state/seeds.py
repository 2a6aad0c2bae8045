"""Toolgroup seeds: the toolgroups a test's store holds before the test starts.

Plain values and their parsing, nothing else: where a seed ends up (registry rows in a
template database, see ``templates``) is decided above this module, so markers, seed
files and the command line can all parse seeds without a stack installed.
"""

from __future__ import annotations

import hashlib
import json
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

__all__ = [
    "MCP_PROVIDER",
    "LazySeed",
    "Seed",
    "SeedError",
    "ToolgroupSeed",
    "load_seed_file",
    "merge_seeds",
    "parse_seeds",
    "resolve_seeds",
    "seed_set_key",
]

MCP_PROVIDER = "model-context-protocol"


class SeedError(ValueError):
    """A seed that cannot be used; the message names where it came from and the fix."""


@dataclass(frozen=True)
class ToolgroupSeed:
    """A toolgroup a store starts with.

    ``provider_id`` defaults to ``model-context-protocol`` for an ``mcp::`` id or a seed
    with an ``mcp_endpoint``; an MCP seed needs an endpoint (llama-stack half-registers a
    toolgroup without one and then fails).
    """

    toolgroup_id: str
    provider_id: str | None = None
    mcp_endpoint: str | None = None
    args: Mapping[str, Any] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.toolgroup_id, str) or not self.toolgroup_id.strip():
            raise SeedError(f"toolgroup_id must be a non-empty string, got {self.toolgroup_id!r}")
        if self.provider_id is None and (
            self.mcp_endpoint or self.toolgroup_id.startswith("mcp::")
        ):
            object.__setattr__(self, "provider_id", MCP_PROVIDER)
        if self.provider_id is None:
            raise SeedError(
                f"{self.toolgroup_id!r}: no provider_id; give one, or use an 'mcp::' id "
                "with an mcp_endpoint"
            )
        if self.provider_id == MCP_PROVIDER and not self.mcp_endpoint:
            raise SeedError(
                f"{self.toolgroup_id!r}: an MCP toolgroup needs mcp_endpoint "
                "(e.g. 'http://127.0.0.1:8000/mcp')"
            )
        if self.mcp_endpoint is not None:
            url = urlparse(str(self.mcp_endpoint))
            if url.scheme not in ("http", "https") or not url.netloc:
                raise SeedError(
                    f"{self.toolgroup_id!r}: mcp_endpoint {self.mcp_endpoint!r} is not an "
                    "http(s) URL"
                )
        if self.args is not None and not isinstance(self.args, Mapping):
            raise SeedError(f"{self.toolgroup_id!r}: args must be a mapping, got {self.args!r}")

    @classmethod
    def coerce(cls, value: object) -> ToolgroupSeed:
        """A seed from a ``ToolgroupSeed`` or a mapping of its fields.

        A bare id string is refused: no toolgroup is registered by its id alone (an MCP one
        needs an endpoint, any other a provider), so say what to give instead.
        """
        if isinstance(value, ToolgroupSeed):
            return value
        if isinstance(value, str):
            raise SeedError(
                f"a seed is a ToolgroupSeed, a mapping or mcp_tools(...), not the bare id "
                f"{value!r}: give {{'toolgroup_id': {value!r}, 'mcp_endpoint': ...}} (or a "
                "provider_id)"
            )
        if isinstance(value, Mapping):
            allowed = {f.name for f in fields(cls)}
            unknown = sorted(set(map(str, value)) - allowed)
            if unknown:
                raise SeedError(
                    f"unknown key(s) {', '.join(unknown)} in seed {dict(value)!r}; "
                    f"allowed: {', '.join(sorted(allowed))}"
                )
            if "toolgroup_id" not in value:
                raise SeedError(f"seed {dict(value)!r} has no toolgroup_id")
            return cls(**{str(k): v for k, v in value.items()})
        raise SeedError(
            f"a seed is a ToolgroupSeed, a mapping or mcp_tools(...), got "
            f"{type(value).__name__} {value!r}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "toolgroup_id": self.toolgroup_id,
            "provider_id": self.provider_id,
            "mcp_endpoint": self.mcp_endpoint,
            "args": dict(self.args) if self.args is not None else None,
        }


class LazySeed(ABC):
    """A seed whose row is known only once something runs: an MCP server the plugin starts.

    Markers are evaluated at import, long before that server should exist; so a lazy seed
    is checked when seeds are parsed (a bad one stops the run at collection) and becomes
    a :class:`ToolgroupSeed` only when a store is made (:func:`resolve_seeds`).
    """

    toolgroup_id: str

    @abstractmethod
    def check(self) -> None:
        """Raise :class:`SeedError` if this seed can never resolve."""

    @abstractmethod
    def resolve(self) -> ToolgroupSeed:
        """The seed as it is now (may start what it needs)."""

    @abstractmethod
    def as_dict(self) -> dict[str, Any]:
        """What the seed stands for, stable across runs (for fingerprints)."""


#: What a seed list holds once parsed.
Seed = ToolgroupSeed | LazySeed


def parse_seeds(values: Iterable[object], source: str) -> tuple[Seed, ...]:
    """Coerce a list of seeds, refusing duplicates; errors name ``source``."""
    seeds: list[Seed] = []
    seen: set[str] = set()
    for value in values:
        try:
            seed: Seed
            if isinstance(value, LazySeed):
                value.check()
                seed = value
            else:
                seed = ToolgroupSeed.coerce(value)
        except (SeedError, TypeError) as exc:
            raise SeedError(f"{source}: {exc}") from None
        if seed.toolgroup_id in seen:
            raise SeedError(f"{source}: toolgroup {seed.toolgroup_id!r} is seeded twice")
        seen.add(seed.toolgroup_id)
        seeds.append(seed)
    return tuple(seeds)


def resolve_seeds(seeds: Iterable[Seed]) -> tuple[ToolgroupSeed, ...]:
    """Every lazy seed turned into the row it stands for now: when a store is made."""
    return tuple(s.resolve() if isinstance(s, LazySeed) else s for s in seeds)


def merge_seeds(*layers: Iterable[Seed]) -> tuple[Seed, ...]:
    """Later layers (closer to the test) replace seeds of the same id from earlier ones."""
    merged: dict[str, Seed] = {}
    for layer in layers:
        for seed in layer:
            merged.pop(seed.toolgroup_id, None)
            merged[seed.toolgroup_id] = seed
    return tuple(merged.values())


def load_seed_file(
    path: Path, convert: Callable[[object], object] | None = None
) -> tuple[Seed, ...]:
    """Seeds from a YAML, JSON or TOML file holding a top-level ``toolgroups`` list.

    ``convert`` turns entries this module does not know (``mcptools``' ``tools`` entries)
    into seeds first; a :class:`SeedError` it raises is reported with the file's path.
    """
    if not path.is_file():
        raise SeedError(f"{path}: seed file not found")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data: Any = yaml.safe_load(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        elif path.suffix == ".toml":
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # pragma: no cover - Python 3.10
                import tomli as tomllib
            data = tomllib.loads(text)
        else:
            raise SeedError(f"{path}: unknown seed file type; use .yaml, .yml, .json or .toml")
    except SeedError:
        raise
    except ModuleNotFoundError as exc:
        raise SeedError(f"{path}: reading it needs the {exc.name} package") from None
    except Exception as exc:  # each parser has its own error type
        detail = " ".join(str(exc).split())  # one line: a parser's may be a drawing
        raise SeedError(f"{path}: does not parse ({type(exc).__name__}: {detail})") from None
    if isinstance(data, Mapping):
        data = data.get("toolgroups")
    if not isinstance(data, list):
        raise SeedError(f"{path}: expected a top-level 'toolgroups' list")
    if convert is not None:
        try:
            data = [convert(entry) for entry in data]
        except SeedError as exc:
            raise SeedError(f"{path}: {exc}") from None
    return parse_seeds(data, str(path))


def seed_set_key(seeds: Iterable[Seed]) -> str:
    """Stable name of a seed set (order-independent), for templates and fingerprints."""
    canonical = sorted((s.as_dict() for s in seeds), key=lambda d: str(d["toolgroup_id"]))
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()[:16]
