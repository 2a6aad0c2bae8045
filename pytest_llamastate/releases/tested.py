"""The releases the compatibility suite runs on, and how each is installed.

Stdlib only, no relative imports: the Makefile runs this file to learn how each tested
release is installed (``python3 pytest_llamastate/releases/tested.py pins llama-stack-0.2.12``),
so the pins users are told (docs/compatibility.md) and the pins the suite runs on are one
list. What differs between the releases is in :mod:`.lines`.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass

__all__ = [
    "TESTED",
    "Tested",
    "Version",
    "parse_version",
    "tested_release",
    "unmet_extras",
    "unmet_pins",
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
    #: What to ``pip install`` besides pytest-llamastate: pip alone does not pin the
    #: stack's API and client packages (they float to the newest, which the stack cannot
    #: import), nor ``mcp<2`` (mcp 2 breaks llama-stack's and OGX 0.8's MCP client); and
    #: llama-stack 0.2 does not install what its own SQL store and server import
    #: (``llama stack build`` adds them to the environments it builds).
    pins: tuple[str, ...]

    @property
    def install(self) -> str:
        """The shell command that installs it: ``pip install llama-stack==0.2.12 ...``."""
        return "pip install " + " ".join(f"'{p}'" if set(p) & set("<[") else p for p in self.pins)

    @property
    def slug(self) -> str:
        """``llama-stack-0.2.12``: the name of its venv and its stamp in the Makefile."""
        return f"{self.distribution}-{self.version}"


#: What llama-stack 0.2's SQL stores (the inference store, the files metadata) import.
_SQL_STORE = ("sqlalchemy[asyncio]",)

TESTED: tuple[Tested, ...] = (
    Tested(
        "llama-stack",
        "0.2.12",
        "3.11",
        (
            "llama-stack==0.2.12",
            "llama-stack-client==0.2.12",
            "mcp<2",
            *_SQL_STORE,
            "aiosqlite",
            "opentelemetry-sdk",
            "opentelemetry-exporter-otlp-proto-http",
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
            *_SQL_STORE,
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


def tested_release(slug: str) -> Tested:
    """The tested release named ``llama-stack-0.2.12``."""
    for tested in TESTED:
        if tested.slug == slug:
            return tested
    raise KeyError(f"no tested release {slug!r}; known: {', '.join(t.slug for t in TESTED)}")


def unmet_pins(tested: Tested) -> list[str]:
    """The pins of ``tested`` this interpreter's installed packages do not satisfy (a venv
    built before its pins changed). Names and versions only; ``packaging`` comes with pytest."""
    from importlib import metadata

    from packaging.requirements import Requirement

    unmet = []
    for pin in tested.pins:
        wanted = Requirement(pin)
        try:
            installed = metadata.version(wanted.name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed is None or not wanted.specifier.contains(installed, prereleases=True):
            unmet.append(pin)
    return unmet


def unmet_extras(extras: list[str]) -> list[str]:
    """The requirements of the plugin's ``extras`` that are not installed here (a venv
    built before the Makefile gave it another extra). Names only: the versions are
    pyproject's, and a change there rebuilds every venv anyway."""
    from importlib import metadata

    from packaging.requirements import Requirement

    unmet = []
    for line in metadata.requires("pytest-llamastate") or []:
        wanted = Requirement(line)
        marker = wanted.marker
        if marker is None or not any(marker.evaluate({"extra": e}) for e in extras):
            continue
        try:
            metadata.version(wanted.name)
        except metadata.PackageNotFoundError:
            unmet.append(wanted.name)
    return unmet


def _main(argv: list[str]) -> int:
    """``pins SLUG`` / ``python SLUG`` / ``slugs`` / ``check SLUG [EXTRA,...]``: what the
    Makefile builds venvs from, and whether a venv (the interpreter running this) still
    fits: its pins, and the plugin's extras it was given."""
    if argv[:1] == ["slugs"]:
        print(" ".join(t.slug for t in TESTED))
        return 0
    if len(argv) in (2, 3) and argv[0] == "check":
        unmet = unmet_pins(tested_release(argv[1]))
        unmet += unmet_extras(argv[2].split(",") if len(argv) == 3 else [])
        if unmet:
            print(f"{argv[1]}: not installed as built (pins, extras): {' '.join(unmet)}")
        return 1 if unmet else 0
    if len(argv) == 2 and argv[0] in ("pins", "python"):
        tested = tested_release(argv[1])
        words = [f"'{p}'" for p in tested.pins] if argv[0] == "pins" else [tested.python]
        print(" ".join(words))
        return 0
    print(
        "usage: tested.py slugs | pins SLUG | python SLUG | check SLUG [EXTRA,...]",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
