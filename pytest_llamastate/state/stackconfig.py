"""Stack run configs: load them, and refuse any whose state would land outside the store.

A config with a hard-coded ``~/.llama/...`` or a relative ``db_path`` starts fine and
silently breaks isolation, so every path a stack writes is resolved (with the store's
environment, the way the stack resolves ``${env.VAR}``) and checked before a stack starts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..releases import LLAMA_STACK
from ..releases.install import install_command
from ..storage.backends import check_block
from ..storage.base import StorageConfigError

__all__ = ["DEFAULT_CONFIG", "StackConfig", "StackConfigError", "env_references", "resolve_env"]

#: The offline, tool-runtime-only config shipped with the plugin (the llama-stack one;
#: each flavor names its own as ``Flavor.default_config``).
DEFAULT_CONFIG = LLAMA_STACK.default_config

#: Keys whose string value is a path the stack writes to.
_PATH_KEYS = frozenset({"db_path", "storage_dir", "external_providers_dir"})
#: ``path`` is a file path only inside a provider's config (qdrant).
_PROVIDER_PATH_KEYS = _PATH_KEYS | {"path"}
# ``:=`` and ``:+`` since llama-stack 0.2.13; ``:`` and ``+`` alone before.
_ENV_REF = re.compile(r"\$\{env\.([A-Z0-9_]+)(?:(:=|:\+|:|\+)([^}]*))?\}")
#: Top-level sections that hold a stack's state: ``storage`` from 0.3, the flat
#: ``metadata_store`` and ``inference_store`` of 0.2.
_STATE_SECTIONS = ("storage.", "metadata_store.", "inference_store.")


class StackConfigError(ValueError):
    """A config that cannot be used; the message names the file, the key and the fix."""


def resolve_env(text: str, environ: Mapping[str, str]) -> str:
    """Expand ``${env.VAR}``, ``${env.VAR:=default}`` and ``${env.VAR:+if_set}`` as the stack does
    (and 0.2.12's ``${env.VAR:default}``, ``${env.VAR+if_set}``).

    An unset (or empty) variable without a default raises ``KeyError(VAR)``.
    """

    def expand(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3) or ""
        value = environ.get(name, "")
        if op in (":=", ":"):
            return value or arg
        if op in (":+", "+"):
            return arg if value else ""
        if not value:
            raise KeyError(name)
        return value

    return _ENV_REF.sub(expand, text)


def env_references(text: str) -> set[str]:
    """The variables a config's ``${env.VAR}`` references name."""
    return {match.group(1) for match in _ENV_REF.finditer(text)}


def _path_values(node: Any, key: str = "", in_provider: bool = False) -> Iterator[tuple[str, Any]]:
    if isinstance(node, Mapping):
        for k, v in node.items():
            dotted = f"{key}.{k}" if key else str(k)
            keys = _PROVIDER_PATH_KEYS if in_provider else _PATH_KEYS
            if k in keys and isinstance(v, str):
                yield dotted, v
            else:
                yield from _path_values(v, dotted, in_provider or key.startswith("providers"))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _path_values(v, f"{key}[{i}]", in_provider)


def _is_memory(path: str) -> bool:
    return path == ":memory:" or "mode=memory" in path


@dataclass(frozen=True)
class StackConfig:
    """A run config file, parsed once."""

    path: Path
    text: str = field(repr=False)
    data: Mapping[str, Any] = field(repr=False)

    @classmethod
    def load(cls, path: Path) -> StackConfig:
        try:
            import yaml
        except ModuleNotFoundError:
            raise StackConfigError(
                f"{path}: reading stack configs needs PyYAML: " + install_command("stack")
            ) from None
        if not path.is_file():
            raise StackConfigError(f"{path}: stack config not found; pass an existing YAML file")
        text = path.read_text(encoding="utf-8")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            detail = " ".join(str(exc).split())  # one line: the parser's is a drawing
            raise StackConfigError(f"{path}: not valid YAML ({detail})") from None
        if not isinstance(data, Mapping):
            raise StackConfigError(f"{path}: not a stack run config (expected a YAML mapping)")
        backends = (
            (data.get("storage") or {}).get("backends")
            if isinstance(data.get("storage"), Mapping)
            else None
        )
        flat = isinstance(data.get("metadata_store"), Mapping)  # llama-stack 0.2
        if not flat and (not isinstance(backends, Mapping) or not backends):
            raise StackConfigError(
                f"{path}: no storage.backends section; add kv_sqlite/sql_sqlite backends with "
                "db_path: ${env.SQLITE_STORE_DIR}/kvstore.db (see the plugin's minimal.yaml; "
                "llama-stack 0.2: a metadata_store, see minimal-0.2.yaml)"
            )
        return cls(path, text, data)

    def replace_data(self, data: Mapping[str, Any]) -> StackConfig:
        """This config with its content replaced (a hook edited it); ``self`` if unchanged."""
        if data == self.data:
            return self
        import yaml  # present: ``load`` needed it to make ``self``

        return StackConfig(self.path, yaml.safe_dump(dict(data), sort_keys=False), data)

    @property
    def metadata_namespace(self) -> str | None:
        """``storage.stores.metadata.namespace``: OGX prefixes registry keys with it."""
        stores = (self.data.get("storage") or {}).get("stores")
        metadata = stores.get("metadata") if isinstance(stores, Mapping) else None
        namespace = metadata.get("namespace") if isinstance(metadata, Mapping) else None
        return namespace if isinstance(namespace, str) and namespace else None

    def providers(self, api: str) -> list[str]:
        """The provider ids configured for ``api`` (e.g. ``tool_runtime``)."""
        entries = (self.data.get("providers") or {}).get(api) or []
        return [str(e.get("provider_id")) for e in entries if isinstance(e, Mapping)]

    def check_paths(self, store_path: Path, store_env: Mapping[str, str]) -> None:
        """Refuse the config unless every path it writes resolves inside ``store_path``.

        ``store_env`` is what points a stack at the store (``LlamaStore.env``): paths are
        resolved with it, the way the stack resolves them once it runs there.
        """
        environ = {**os.environ, **store_env}
        root = store_path.absolute()
        inside = 0
        for key, raw in _path_values(self.data):
            try:
                value = resolve_env(raw, environ)
            except KeyError as exc:
                raise StackConfigError(
                    f"{self.path}: {key} uses ${{env.{exc.args[0]}}}, which is not set; "
                    "set it or point the path at ${env.SQLITE_STORE_DIR}"
                ) from None
            if _is_memory(value):
                continue
            if not os.path.isabs(os.path.expanduser(value)):
                raise StackConfigError(
                    f"{self.path}: {key} = {value!r} is a relative path, which lands wherever "
                    "the stack runs; use ${env.SQLITE_STORE_DIR}/<file>"
                )
            resolved = Path(os.path.abspath(os.path.expanduser(value)))
            if resolved != root and root not in resolved.parents:
                raise StackConfigError(
                    f"{self.path}: {key} = {resolved} is outside the test's store, so state "
                    "would leak between tests; use ${env.SQLITE_STORE_DIR}/<file> "
                    "(or ${env.FILES_STORAGE_DIR}, ${env.MILVUS_DB_PATH})"
                )
            inside += key.startswith(_STATE_SECTIONS)
        inside += self._check_databases(environ, store_env)
        if not inside:
            raise StackConfigError(
                f"{self.path}: no storage backend writes into the store (no sqlite db_path, "
                "no database backend on the store's own); add db_path: "
                "${env.SQLITE_STORE_DIR}/kvstore.db"
            )

    def _backends(self) -> dict[str, Mapping[str, Any]]:
        storage = self.data.get("storage")
        backends = storage.get("backends") if isinstance(storage, Mapping) else None
        if not isinstance(backends, Mapping):
            return {}
        return {str(k): v for k, v in backends.items() if isinstance(v, Mapping)}

    def _check_databases(self, environ: Mapping[str, str], store_env: Mapping[str, str]) -> int:
        """Refuse a database backend that is not the store's own (each storage backend
        checks the blocks of its types); count those that are."""
        own = 0
        for name, backend in self._backends().items():
            try:
                own += check_block(
                    f"{self.path}: storage.backends.{name}",
                    backend,
                    lambda raw: resolve_env(raw, environ),
                    store_env,
                )
            except StorageConfigError as exc:
                raise StackConfigError(str(exc)) from None
        return own

    def write_to(self, target: Path) -> Path:
        """Copy the config into a store (``stack.yaml``): what ran is kept with its state.

        Also gives the stack the ``.yaml`` name it insists on (``.yml`` is taken as a
        distribution name).
        """
        target.write_text(self.text, encoding="utf-8")
        return target
