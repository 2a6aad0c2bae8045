"""Toolgroup seeds: the toolgroups a test's store holds before the test starts.

Llama Stack 0.7 has no API that registers a toolgroup ahead of a stack (the routes were
removed, and ``tool_groups:`` in a run config is emptied by a validator), so seeds become
registry rows, written the way the installed stack writes them. Each distinct seed set is
built once into a template database and copied per test, like pytest-postgresql's
template databases: a copy costs a file copy, not a stack start.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sqlite3
import sys
import tempfile
import uuid
from collections.abc import Iterable, Mapping
from contextlib import closing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from filelock import FileLock

from .flavor import Flavor, detect
from .registry import RegistryFormat, installed_format, write_entries
from .stackconfig import StackConfig

__all__ = ["SeedError", "TemplateCache", "ToolgroupSeed", "load_seed_file", "parse_seeds"]

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
        """A seed from a ``ToolgroupSeed``, a mapping of its fields, or a bare id string."""
        if isinstance(value, ToolgroupSeed):
            return value
        if isinstance(value, str):
            return cls(value)
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
            f"a seed is a ToolgroupSeed, a mapping or an id string, got {type(value).__name__} "
            f"{value!r}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "toolgroup_id": self.toolgroup_id,
            "provider_id": self.provider_id,
            "mcp_endpoint": self.mcp_endpoint,
            "args": dict(self.args) if self.args is not None else None,
        }


def parse_seeds(values: Iterable[object], source: str) -> tuple[ToolgroupSeed, ...]:
    """Coerce a list of seeds, refusing duplicates; errors name ``source``."""
    seeds: list[ToolgroupSeed] = []
    seen: set[str] = set()
    for value in values:
        try:
            seed = ToolgroupSeed.coerce(value)
        except (SeedError, TypeError) as exc:
            raise SeedError(f"{source}: {exc}") from None
        if seed.toolgroup_id in seen:
            raise SeedError(f"{source}: toolgroup {seed.toolgroup_id!r} is seeded twice")
        seen.add(seed.toolgroup_id)
        seeds.append(seed)
    return tuple(seeds)


def merge_seeds(*layers: Iterable[ToolgroupSeed]) -> tuple[ToolgroupSeed, ...]:
    """Later layers (closer to the test) replace seeds of the same id from earlier ones."""
    merged: dict[str, ToolgroupSeed] = {}
    for layer in layers:
        for seed in layer:
            merged.pop(seed.toolgroup_id, None)
            merged[seed.toolgroup_id] = seed
    return tuple(merged.values())


def load_seed_file(path: Path) -> tuple[ToolgroupSeed, ...]:
    """Seeds from a YAML, JSON or TOML file holding a top-level ``toolgroups`` list."""
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
        raise SeedError(f"{path}: does not parse ({type(exc).__name__}: {exc})") from None
    if isinstance(data, Mapping):
        data = data.get("toolgroups")
    if not isinstance(data, list):
        raise SeedError(f"{path}: expected a top-level 'toolgroups' list")
    return parse_seeds(data, str(path))


def seed_set_key(seeds: Iterable[ToolgroupSeed]) -> str:
    """Stable name of a seed set (order-independent), for templates and fingerprints."""
    canonical = sorted((s.as_dict() for s in seeds), key=lambda d: str(d["toolgroup_id"]))
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()[:16]


def _rows(seeds: Iterable[ToolgroupSeed], fmt: RegistryFormat) -> dict[str, str]:
    return dict(
        fmt.toolgroup_row(s.toolgroup_id, str(s.provider_id), s.mcp_endpoint, s.args) for s in seeds
    )


def _finalize(db: Path) -> None:
    """Fold any WAL into the main file, so copying one file copies a consistent database."""
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")


@dataclass
class TemplateCache:
    """One template ``kvstore.db`` per distinct seed set, shared by every xdist worker.

    ``root`` is chosen by the controller and handed to the workers; it is created on the
    first template built, so runs without seeds touch nothing. Rows are written in the
    format of ``flavor`` (default: detected) for the metadata namespace of ``config``
    (OGX only reads keys under it); the config is read when the first template is built.
    """

    root: Path
    flavor: Flavor | None = None
    config: Path | None = None
    _format: RegistryFormat | None = field(default=None, repr=False)
    _built: dict[str, Path] = field(default_factory=dict, repr=False)

    @classmethod
    def new_root(cls) -> Path:
        return Path(tempfile.gettempdir()) / f"pytest-llamastate-templates-{uuid.uuid4().hex[:12]}"

    @property
    def format(self) -> RegistryFormat:
        """How seed rows are written: the installed stack's format, with the namespace."""
        if self._format is None:
            flavor = self.flavor or detect()
            namespace = None
            if self.config is not None and flavor.namespaced_keys:
                namespace = StackConfig.load(self.config).metadata_namespace
            try:
                self._format = installed_format(flavor, namespace)
            except ModuleNotFoundError as exc:
                raise SeedError(f"seeds need a stack to take their format from: {exc}") from None
        return self._format

    def template(self, seeds: tuple[ToolgroupSeed, ...]) -> Path:
        """The template database for ``seeds``, built on first use (once per run, locked)."""
        fmt = self.format
        # Everything that shapes the rows names the file: workers never share a wrong one.
        shape = re.sub(r"\W", "_", f"{fmt.package}-{fmt.version}-{fmt.namespace or ''}")
        key = f"{shape}-{seed_set_key(seeds)}"
        if key in self._built:
            return self._built[key]
        db = self.root / f"{key}.db"
        self.root.mkdir(mode=0o700, exist_ok=True)
        with FileLock(str(self.root / f"{key}.lock")):
            if not db.exists():
                partial = db.with_suffix(".partial")
                partial.unlink(missing_ok=True)
                write_entries(partial, _rows(seeds, fmt))
                _finalize(partial)
                partial.rename(db)
        self._built[key] = db
        return db

    def apply(self, seeds: tuple[ToolgroupSeed, ...], kvstore: Path) -> None:
        """Put ``seeds`` into a store: a copy of the template when it has no registry yet.

        Refused while a stack runs on the store: its registry caches what it read, so
        rows written under it would not be seen (or would be overwritten).
        """
        if not seeds:
            return
        from .stack import running_stack

        if (stack := running_stack(kvstore.parent)) is not None:
            raise SeedError(
                f"{kvstore.parent}: a stack is running on this store "
                f"({stack.label or 'no label'}); seed it before the stack starts"
            )
        if not kvstore.exists():
            shutil.copyfile(self.template(seeds), kvstore)
            return
        write_entries(kvstore, _rows(seeds, self.format))

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
