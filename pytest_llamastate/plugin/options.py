"""Command-line options, their ini twins, and validating both once at configure time.

A wrong value must stop the run before any test starts, naming the value and the allowed
ones: finding out in the middle of a suite (or never) is worse.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from ..releases import FLAVOR_CHOICES, LLAMA_STACK, Flavor, detect
from ..stack import (
    ENGINE_CHOICES,
    IMAGE_CONFIG,
    SERVER_PROCESSES,
    STACK_MODES,
    ContainerRuntime,
    EngineError,
    ServerProcess,
    StackMode,
    default_server_process,
)
from ..state.guard import GUARD_MODES, GuardMode
from ..state.leaks import LEAK_MODES, LeakMode
from ..state.mcptools import from_seed_entry
from ..state.persistent import CACHE_SUBDIR, check_name
from ..state.seed_rows import STATE_CACHE_SUBDIR
from ..state.seeds import Seed, SeedError, load_seed_file
from ..state.stackconfig import StackConfig, StackConfigError
from ..state.store import state_env
from ..state.store_factory import KEEP_POLICIES, KeepPolicy
from ..storage.backends import BACKENDS, DEFAULT, backend
from . import values

__all__ = ["OPTIONS", "Option", "Settings", "addoption"]

_T = TypeVar("_T", bound=str)


@dataclass(frozen=True)
class Option:
    """One option: ``--llama-x`` on the command line and ``llama_x`` in the ini file, one
    meaning; ``cli=False`` is an ini key alone. ``argparse`` takes ``nargs``, ``const``
    and ``action`` as given."""

    name: str
    help: str
    default: str = ""
    metavar: str = "VALUE"
    cli: bool = True
    argparse: Mapping[str, object] = field(default_factory=dict)


OPTIONS = (
    Option(
        "llama_store_dir",
        "base folder of test stores (default: <basetemp>/llamastate); "
        "each run gets a numbered run-N folder in it",
        metavar="DIR",
    ),
    Option(
        "llama_keep_store",
        "which stores to keep after their test: failed (default), all, none; the bare flag "
        "keeps all (write --llama-keep-store=VALUE)",
        default="failed",
        metavar="WHICH",
        argparse={"nargs": "?", "const": "all"},
    ),
    Option(
        "llama_store_retention_count",
        "how many run-N folders to keep under llama_store_dir (default 3)",
        default="3",
        cli=False,
    ),
    Option(
        "llama_guard",
        "on a test writing to the real ~/.llama or ~/.ogx: error (default), warn, off",
        default="error",
        metavar="MODE",
    ),
    Option(
        "llama_stack_mode",
        "how llama_stack runs: library (in-process, default), server "
        "(`llama stack run` / `ogx run`) or container (--llama-stack-image)",
        default="library",
        metavar="MODE",
    ),
    Option(
        "llama_server_process",
        "how a server-mode stack starts: fork (default where the platform can: forked from "
        "a process that imported the stack once) or exec (the `llama stack run` command)",
        default=default_server_process(),
        metavar="KIND",
    ),
    Option(
        "llama_stack_image", "container mode's image (a local one: never pulled)", metavar="IMAGE"
    ),
    Option(
        "llama_container_engine",
        "container mode's engine: auto (default: docker if its daemon answers, else podman), "
        "docker or podman",
        default="auto",
        metavar="ENGINE",
    ),
    Option(
        "llama_flavor",
        "which stack to run: auto (default: the installed one; llama-stack "
        "if both), llama-stack or ogx",
        default="auto",
        metavar="FLAVOR",
    ),
    Option(
        "llama_backend",
        "where stores keep their registry and SQL tables: sqlite (files in the store, "
        "default) or postgres (a database per store)",
        default=DEFAULT,
        metavar="BACKEND",
    ),
    Option(
        "llama_postgres_url",
        "Postgres server for --llama-backend=postgres, with a role that may create "
        "databases (default: a throwaway server the plugin starts)",
        metavar="URL",
    ),
    Option(
        "llama_stack_config",
        "run config for llama_stack (default: the plugin's offline minimal config); "
        "container mode: image:PATH is the image's own file at PATH",
        metavar="PATH",
    ),
    Option(
        "llama_stack_start_timeout",
        "seconds a server may take to become healthy (default 60)",
        default="60",
        metavar="SECONDS",
    ),
    Option(
        "llama_persist_dir",
        "folder of @pytest.mark.persistent stores (default: <pytest cache dir>/d/llamastate)",
        metavar="DIR",
    ),
    Option(
        "llama_reset_persistent",
        "wipe persistent stores before their first use in this "
        "run: all, or the named ones (write --llama-reset-persistent=NAME)",
        metavar="NAME[,NAME]",
        argparse={"nargs": "?", "const": "*"},
    ),
    Option(
        "llama_persist_lock_timeout",
        "seconds a test waits for a persistent store another test holds (default 600)",
        default="600",
        cli=False,
    ),
    Option(
        "llama_reuse_templates",
        "keep built state templates in the pytest cache folder between runs; rebuilt when "
        "the builder's source, the config, the seeds or the installed versions change",
        default="false",
        argparse={"action": "store_true"},
    ),
    Option(
        "llama_leaks",
        "on a test leaving registry entries or rows behind in a store it shares with other "
        "tests (module/session scope): warn (default), error, off",
        default="warn",
        metavar="MODE",
    ),
    Option(
        "llama_toolgroups_file",
        "YAML, JSON or TOML file with a 'toolgroups' list every test's store starts with",
        cli=False,
    ),
)


def addoption(parser: pytest.Parser) -> None:
    """Every option of ``OPTIONS``, in its order: the command line's and the ini's."""
    group = parser.getgroup("llamastate", "isolated Llama Stack state (pytest-llamastate)")
    for option in OPTIONS:
        if option.cli:
            flag = option.argparse.get("action") == "store_true"  # takes no value to name
            group.addoption(
                "--" + option.name.replace("_", "-"),
                help=f"{option.help} (ini: {option.name})",
                **({} if flag else {"metavar": option.metavar}),
                **option.argparse,
            )
        parser.addini(option.name, option.help, default=option.default)


@dataclass(frozen=True)
class Settings:
    """Every option of the plugin, validated; built once per session."""

    store_dir: Path | None
    keep: KeepPolicy
    retention_count: int
    guard: GuardMode
    stack_mode: StackMode
    server_process: ServerProcess
    #: The storage backend's name (``storage.backends``), and the server it was given.
    backend: str
    storage_url: str | None
    stack_config: Path
    start_timeout: float
    seeds: tuple[Seed, ...]
    persist_dir: Path
    reset_persistent: frozenset[str]
    persist_lock_timeout: float
    flavor: Flavor = LLAMA_STACK
    #: Keep built state templates between runs, in ``template_cache``.
    reuse_templates: bool = False
    template_cache: Path = Path(".pytest_cache") / STATE_CACHE_SUBDIR
    leaks: LeakMode = "warn"
    #: The engine and image of container mode (``None`` in the other modes).
    container: ContainerRuntime | None = None

    @classmethod
    def from_config(cls, config: pytest.Config) -> Settings:
        raw_dir = values.given(config, "llama_store_dir")
        keep_raw = values.not_a_path(
            values.required(config, "llama_keep_store"), "which stores", "WHICH"
        )
        keep = values.choice(keep_raw, KEEP_POLICIES)
        count = values.required(config, "llama_store_retention_count")
        if not count.value.strip().isdigit():
            raise pytest.UsageError(f"{count.source}: {count.value!r} is not a whole number >= 0")
        flavor = detect(values.choice(values.required(config, "llama_flavor"), FLAVOR_CHOICES))
        backend = values.choice(values.required(config, "llama_backend"), tuple(BACKENDS))
        url = values.given(config, "llama_postgres_url")
        if url is not None and backend != "postgres":
            raise pytest.UsageError(
                f"{url.source} is set, but the backend is {backend}: add --llama-backend=postgres"
            )
        mode = values.choice(values.required(config, "llama_stack_mode"), STACK_MODES)
        container = _container(config) if mode == "container" else None
        return cls(
            store_dir=values.writable_dir(raw_dir) if raw_dir else None,
            keep=keep,
            retention_count=int(count.value),
            guard=values.choice(values.required(config, "llama_guard"), GUARD_MODES),
            stack_mode=mode,
            server_process=_server_process(config),
            backend=backend,
            storage_url=url.value if url else None,
            stack_config=_stack_config(config, flavor, backend, container),
            start_timeout=values.positive_number(
                values.required(config, "llama_stack_start_timeout")
            ),
            seeds=_seed_file(config),
            persist_dir=_persist_dir(config),
            reset_persistent=_reset_names(config),
            persist_lock_timeout=values.positive_number(
                values.required(config, "llama_persist_lock_timeout")
            ),
            flavor=flavor,
            reuse_templates=values.flag(values.required(config, "llama_reuse_templates")),
            template_cache=_cache_dir(config) / STATE_CACHE_SUBDIR,
            leaks=values.choice(values.required(config, "llama_leaks"), LEAK_MODES),
            container=container,
        )


def _server_process(config: pytest.Config) -> ServerProcess:
    raw = values.required(config, "llama_server_process")
    process = values.choice(raw, SERVER_PROCESSES)
    if process == "fork" and default_server_process() != "fork":
        raise pytest.UsageError(f"{raw.source}: this platform cannot fork; use exec")
    return process


def _container(config: pytest.Config) -> ContainerRuntime:
    """The engine and the image, both checked now: an engine that is missing or an image
    that is not local would fail every test the same way."""
    image = values.given(config, "llama_stack_image")
    choice = values.choice(values.required(config, "llama_container_engine"), ENGINE_CHOICES)
    try:
        return ContainerRuntime.checked(choice, image.value.strip() if image else "")
    except EngineError as exc:
        raise pytest.UsageError(str(exc)) from None


def _cache_dir(config: pytest.Config) -> Path:
    """pytest's cache folder (``cache_dir``), also when the cache plugin is disabled."""
    try:
        cache_dir = str(config.getini("cache_dir"))
    except ValueError:  # -p no:cacheprovider
        cache_dir = ".pytest_cache"
    return config.rootpath / os.path.expanduser(cache_dir)


def _persist_dir(config: pytest.Config) -> Path:
    if raw := values.given(config, "llama_persist_dir"):
        return values.writable_dir(raw)
    return _cache_dir(config) / CACHE_SUBDIR


def _reset_names(config: pytest.Config) -> frozenset[str]:
    raw = values.given(config, "llama_reset_persistent")
    if raw is None:
        return frozenset()
    names = frozenset(n.strip() for n in raw.value.split(",") if n.strip())
    for name in names - {"*"}:
        values.not_a_path(values.Raw(name, raw.source, raw.base), "a store name", "NAME")
        try:
            check_name(name)
        except ValueError as exc:
            raise pytest.UsageError(f"{raw.source}: {exc}") from None
    return names


def _seed_file(config: pytest.Config) -> tuple[Seed, ...]:
    if (raw := values.given(config, "llama_toolgroups_file")) is None:
        return ()
    try:
        return load_seed_file(raw.path(), from_seed_entry)
    except SeedError as exc:
        raise pytest.UsageError(f"llama_toolgroups_file: {exc}") from None


def _stack_config(
    config: pytest.Config, flavor: Flavor, storage: str, container: ContainerRuntime | None
) -> Path:
    """The configured run config, checked now so a bad one stops the run before it starts.

    Without one, the flavor's own offline config for the storage backend (OGX keeps
    prompts in SQL tables). ``image:PATH`` (container mode) is the image's own config,
    copied out.
    """
    if (raw := values.given(config, "llama_stack_config")) is None:
        return backend(storage).default_config(flavor)
    path = raw.path()
    if raw.value.startswith(IMAGE_CONFIG):
        if container is None:
            raise pytest.UsageError(
                f"{raw.source}={raw.value}: the image's own config needs "
                "--llama-stack-mode=container; give a file on this machine otherwise"
            )
        try:
            path = container.config_file(
                raw.value.removeprefix(IMAGE_CONFIG), _cache_dir(config) / "llamastate-images"
            )
        except EngineError as exc:
            raise pytest.UsageError(f"{raw.source}={raw.value}: {exc}") from None
    try:
        probe = Path(tempfile.gettempdir(), "llamastate-check")
        env = {**state_env(probe), **backend(storage).probe_env()}
        StackConfig.load(path).check_paths(probe, env)
    except StackConfigError as exc:
        raise pytest.UsageError(f"{raw.source}: {exc}") from None
    return path
