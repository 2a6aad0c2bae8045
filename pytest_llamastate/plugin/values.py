"""Reading one option or its ini twin: the command line wins, a relative path is relative to
where it was given, and a bad value stops the run with one line naming it and the fix."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

__all__ = [
    "Raw",
    "choice",
    "flag",
    "given",
    "not_a_path",
    "positive_number",
    "required",
    "writable_dir",
]

_T = TypeVar("_T", bound=str)


@dataclass(frozen=True)
class Raw:
    """An option's value as given, where it came from, and what a relative path means."""

    value: str
    source: str
    base: Path

    def path(self) -> Path:
        return (self.base / os.path.expanduser(self.value)).absolute()


def given(config: pytest.Config, name: str) -> Raw | None:
    """The command line wins over the ini file; ``None`` when neither gives a value."""
    if cli := config.getoption(name, None):
        return Raw(str(cli), "--" + name.replace("_", "-"), config.invocation_params.dir)
    if ini := str(config.getini(name)):
        base = config.inipath.parent if config.inipath else config.rootpath
        return Raw(ini, f"ini {name}", base)
    return None


def required(config: pytest.Config, name: str) -> Raw:
    """For options with an ini default, which always have a value."""
    value = given(config, name)
    assert value is not None, name
    return value


def choice(raw: Raw, allowed: tuple[_T, ...]) -> _T:
    for choice in allowed:
        if raw.value.strip().lower() == choice:
            return choice
    raise pytest.UsageError(
        f"{raw.source}: unknown value {raw.value!r}; allowed values: {', '.join(allowed)}"
    )


def not_a_path(raw: Raw, what: str = "a value", metavar: str = "VALUE") -> Raw:
    """Refuse a test path taken as an option's value: an option whose value is optional
    (``--llama-keep-store tests/test_x.py``) takes the next argument when it has no ``=``."""
    value = raw.value.strip()
    if raw.source.startswith("--") and ("/" in value or "::" in value or value.endswith(".py")):
        raise pytest.UsageError(
            f"{raw.source}: {value!r} looks like a test path, not {what}: write "
            f"{raw.source}={metavar} (with '='), or put the option after the test paths"
        )
    return raw


def positive_number(raw: Raw) -> float:
    try:
        value = float(raw.value)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise pytest.UsageError(f"{raw.source}: {raw.value!r} is not a positive number of seconds")
    return value


def writable_dir(raw: Raw) -> Path:
    path = raw.path()
    if path.exists() and not path.is_dir():
        raise pytest.UsageError(f"{raw.source}: {path} exists and is not a folder; choose a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as exc:
        raise pytest.UsageError(
            f"{raw.source}: cannot write to {path} ({exc.strerror or exc}); "
            "choose a folder you can write to"
        ) from None
    return path


def flag(raw: Raw) -> bool:
    value = raw.value.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise pytest.UsageError(f"{raw.source}: {raw.value!r} is not a boolean; use true or false")
