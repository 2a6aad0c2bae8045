"""Command-line options, their ini twins, and validating both once at configure time.

A wrong value must stop the run before any test starts, naming the value and the allowed
ones: finding out in the middle of a suite (or never) is worse.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from .factory import KEEP_POLICIES, KeepPolicy
from .flavor import FLAVOR_CHOICES, LLAMA_STACK, Flavor, detect
from .guard import GUARD_MODES, GuardMode
from .persistence import check_name
from .seeds import SeedError, ToolgroupSeed, load_seed_file
from .stack import STACK_MODES, StackMode
from .stackconfig import StackConfig, StackConfigError

__all__ = ["Settings", "addoption"]

_T = TypeVar("_T", bound=str)


def addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("llamastate", "isolated Llama Stack state (pytest-llamastate)")
    group.addoption(
        "--llama-store-dir",
        metavar="DIR",
        help="base folder for test stores (default: <basetemp>/llamastate); "
        "each run gets a numbered run-N folder in it. ini: llama_store_dir",
    )
    parser.addini(
        "llama_store_dir", "base folder for test stores (default: under pytest's basetemp)"
    )
    group.addoption(
        "--llama-keep-store",
        action="store_true",
        default=None,
        help="keep every store of the run (ini llama_keep_store = failed|all|none, default failed)",
    )
    parser.addini(
        "llama_keep_store", "which stores to keep: failed (default), all, none", default="failed"
    )
    parser.addini(
        "llama_store_retention_count",
        "how many run-N folders to keep under llama_store_dir (default 3)",
        default="3",
    )
    group.addoption(
        "--llama-guard",
        metavar="MODE",
        help="on a test writing to the real ~/.llama or ~/.ogx: error (default), warn, off. "
        "ini: llama_guard",
    )
    parser.addini("llama_guard", "leak guard mode: error (default), warn, off", default="error")
    group.addoption(
        "--llama-stack-mode",
        metavar="MODE",
        help="how llama_stack runs: library (in-process, default) or server "
        "(`llama stack run` / `ogx run`). ini: llama_stack_mode",
    )
    parser.addini("llama_stack_mode", "library (default) or server", default="library")
    group.addoption(
        "--llama-flavor",
        metavar="FLAVOR",
        help="which stack to run: auto (default: the installed one; llama-stack if both), "
        "llama-stack or ogx. ini: llama_flavor",
    )
    parser.addini("llama_flavor", "auto (default), llama-stack or ogx", default="auto")
    group.addoption(
        "--llama-stack-config",
        metavar="PATH",
        help="run config for llama_stack (default: the plugin's offline minimal.yaml). "
        "ini: llama_stack_config",
    )
    parser.addini("llama_stack_config", "run config for llama_stack")
    group.addoption(
        "--llama-stack-start-timeout",
        metavar="SECONDS",
        help="how long a server may take to become healthy (default 60). "
        "ini: llama_stack_start_timeout",
    )
    parser.addini(
        "llama_stack_start_timeout", "seconds a server may take to start (default 60)", default="60"
    )
    group.addoption(
        "--llama-persist-dir",
        metavar="DIR",
        help="folder of @pytest.mark.persistent stores (default: <pytest cache dir>/d/llamastate). "
        "ini: llama_persist_dir",
    )
    parser.addini("llama_persist_dir", "folder of persistent stores")
    group.addoption(
        "--llama-reset-persistent",
        nargs="?",
        const="*",
        metavar="NAME[,NAME]",
        help="wipe persistent stores before their first use in this run: all, or the named "
        "ones (write --llama-reset-persistent=NAME). ini: llama_reset_persistent",
    )
    parser.addini("llama_reset_persistent", "persistent stores to wipe first: * or NAME[,NAME]")
    parser.addini(
        "llama_persist_lock_timeout",
        "seconds a test waits for a persistent store another test holds (default 600)",
        default="600",
    )
    parser.addini(
        "llama_toolgroups_file",
        "YAML, JSON or TOML file with a 'toolgroups' list every test's store starts with",
    )


def _choice(value: str, allowed: tuple[_T, ...], source: str) -> _T:
    for choice in allowed:
        if value.strip().lower() == choice:
            return choice
    raise pytest.UsageError(
        f"{source}: unknown value {value!r}; allowed values: {', '.join(allowed)}"
    )


def _writable_dir(raw: str, base: Path, source: str) -> Path:
    path = (base / os.path.expanduser(raw)).absolute()
    if path.exists() and not path.is_dir():
        raise pytest.UsageError(f"{source}: {path} exists and is not a folder; choose a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as exc:
        raise pytest.UsageError(
            f"{source}: cannot write to {path} ({exc.strerror or exc}); "
            "choose a folder you can write to"
        ) from None
    return path


@dataclass(frozen=True)
class Settings:
    """Every option of the plugin, validated; built once per session."""

    store_dir: Path | None
    keep: KeepPolicy
    retention_count: int
    guard: GuardMode
    stack_mode: StackMode
    stack_config: Path
    start_timeout: float
    seeds: tuple[ToolgroupSeed, ...]
    persist_dir: Path
    reset_persistent: frozenset[str]
    persist_lock_timeout: float
    flavor: Flavor = LLAMA_STACK

    @classmethod
    def from_config(cls, config: pytest.Config) -> Settings:
        raw_dir = config.getoption("llama_store_dir")
        if raw_dir:
            store_dir = _writable_dir(raw_dir, config.invocation_params.dir, "--llama-store-dir")
        elif raw_ini := str(config.getini("llama_store_dir")):
            ini_base = config.inipath.parent if config.inipath else config.rootpath
            store_dir = _writable_dir(raw_ini, ini_base, "ini llama_store_dir")
        else:
            store_dir = None

        if config.getoption("llama_keep_store"):
            keep: KeepPolicy = "all"
        else:
            keep = _choice(
                str(config.getini("llama_keep_store")), KEEP_POLICIES, "llama_keep_store"
            )

        raw_count = str(config.getini("llama_store_retention_count"))
        if not raw_count.strip().isdigit():
            raise pytest.UsageError(
                f"llama_store_retention_count: {raw_count!r} is not a whole number >= 0"
            )

        raw_guard = config.getoption("llama_guard")
        guard = _choice(
            raw_guard or str(config.getini("llama_guard")),
            GUARD_MODES,
            "--llama-guard" if raw_guard else "llama_guard",
        )
        raw_mode = config.getoption("llama_stack_mode")
        mode = _choice(
            raw_mode or str(config.getini("llama_stack_mode")),
            STACK_MODES,
            "--llama-stack-mode" if raw_mode else "llama_stack_mode",
        )
        raw_flavor = config.getoption("llama_flavor")
        flavor = detect(
            _choice(
                raw_flavor or str(config.getini("llama_flavor")),
                FLAVOR_CHOICES,
                "--llama-flavor" if raw_flavor else "llama_flavor",
            )
        )
        timeout = _positive_number(
            config.getoption("llama_stack_start_timeout")
            or str(config.getini("llama_stack_start_timeout")),
            "llama_stack_start_timeout",
        )
        return cls(
            store_dir,
            keep,
            int(raw_count),
            guard,
            mode,
            _stack_config(config, flavor),
            timeout,
            _seed_file(config),
            _persist_dir(config),
            _reset_names(config),
            _positive_number(
                str(config.getini("llama_persist_lock_timeout")), "llama_persist_lock_timeout"
            ),
            flavor=flavor,
        )


def _persist_dir(config: pytest.Config) -> Path:
    if raw := config.getoption("llama_persist_dir"):
        return _writable_dir(str(raw), config.invocation_params.dir, "--llama-persist-dir")
    if raw_ini := str(config.getini("llama_persist_dir")):
        ini_base = config.inipath.parent if config.inipath else config.rootpath
        return _writable_dir(raw_ini, ini_base, "ini llama_persist_dir")
    try:
        cache_dir = str(config.getini("cache_dir"))
    except ValueError:  # -p no:cacheprovider
        cache_dir = ".pytest_cache"
    # Where pytest's Cache.mkdir() puts folders: --cache-clear wipes d/, so it resets
    # the persistent stores too.
    return config.rootpath / os.path.expanduser(cache_dir) / "d" / "llamastate"


def _reset_names(config: pytest.Config) -> frozenset[str]:
    raw = config.getoption("llama_reset_persistent") or str(config.getini("llama_reset_persistent"))
    names = frozenset(n.strip() for n in str(raw).split(",") if n.strip())
    for name in names - {"*"}:
        try:
            check_name(name)
        except ValueError as exc:
            raise pytest.UsageError(
                f"--llama-reset-persistent: {exc} (a path after the option? write "
                "--llama-reset-persistent=NAME, or put the option last)"
            ) from None
    return names


def _seed_file(config: pytest.Config) -> tuple[ToolgroupSeed, ...]:
    raw = str(config.getini("llama_toolgroups_file"))
    if not raw:
        return ()
    ini_base = config.inipath.parent if config.inipath else config.rootpath
    try:
        return load_seed_file((ini_base / raw).absolute())
    except SeedError as exc:
        raise pytest.UsageError(f"llama_toolgroups_file: {exc}") from None


def _positive_number(raw: str, source: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise pytest.UsageError(f"{source}: {raw!r} is not a positive number of seconds")
    return value


def _stack_config(config: pytest.Config, flavor: Flavor) -> Path:
    """The configured run config, checked now so a bad one stops the run before it starts.

    Without one, the flavor's own offline config (OGX keeps prompts in SQL tables).
    """
    if raw := config.getoption("llama_stack_config"):
        path, source = (config.invocation_params.dir / str(raw)).absolute(), "--llama-stack-config"
    elif raw_ini := str(config.getini("llama_stack_config")):
        ini_base = config.inipath.parent if config.inipath else config.rootpath
        path, source = (ini_base / raw_ini).absolute(), "ini llama_stack_config"
    else:
        return flavor.default_config
    try:
        StackConfig.load(path).check_paths(Path(tempfile.gettempdir(), "llamastate-check"))
    except StackConfigError as exc:
        raise pytest.UsageError(f"{source}: {exc}") from None
    return path
