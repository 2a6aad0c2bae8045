"""MkDocs hook: the reference pages, filled from the code at build time so they cannot drift.

A page asks for a part with an HTML comment on a line of its own, e.g.
``<!-- reference: options -->``; the comment is replaced by what the installed plugin says:

- ``options``: every command-line option and ini key, from the ``pytest_addoption`` of the
  plugin's module and of the modules it loads (``pytest_plugins``), run on a fresh
  pytest ``Parser``;
- ``markers``: what ``pytest --markers`` lists with the plugin and not without it;
- ``fixtures``: the plugin's section of ``pytest --fixtures -v``;
- ``hooks``: the hookspecs the plugin adds (``pytest_addhooks``), signature and docstring;
- ``cli``: ``llamastate --help`` and each subcommand's ``--help``, as printed;
- ``configs``: the run configs shipped in the package.

Everything is found through the installed entry points (``pytest11`` and the
``llamastate`` console script), not through module paths, so moving modules does not
break the build; a part that cannot be made fails it (``mkdocs build --strict``).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import re
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable
from importlib import metadata, resources
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

_MARKER = re.compile(r"^<!-- reference: ([a-z-]+) -->$", re.MULTILINE)

#: Wide enough that argparse and pytest do not wrap the help text differently per terminal.
_ENV = {**os.environ, "COLUMNS": "100", "NO_COLOR": "1", "PYTEST_ADDOPTS": ""}


def on_page_markdown(markdown: str, **_: Any) -> str:
    """Replace each ``<!-- reference: PART -->`` line with the generated part."""

    def part(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in PARTS:
            raise ValueError(f"unknown reference part {name!r}; known: {', '.join(PARTS)}")
        return PARTS[name]()

    return _MARKER.sub(part, markdown)


@functools.cache
def _plugin() -> ModuleType:
    """The module pytest loads for ``-p llamastate`` (the ``pytest11`` entry point)."""
    (entry,) = metadata.entry_points(group="pytest11", name="llamastate")
    module: ModuleType = entry.load()
    return module


def _plugin_modules() -> list[ModuleType]:
    """The plugin's module and those it loads with ``pytest_plugins`` (each may add options)."""
    plugin = _plugin()
    names = getattr(plugin, "pytest_plugins", [])
    return [plugin, *(importlib.import_module(name) for name in names)]


def _run(*args: str) -> str:
    """Run a command in an empty folder (no ini file, no conftest) and return its stdout."""
    with tempfile.TemporaryDirectory() as folder:
        done = subprocess.run(
            args, cwd=folder, env=_ENV, capture_output=True, text=True, timeout=120, check=False
        )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


def _cell(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


@functools.cache
def options() -> str:
    parser = pytest.Parser(_ispytest=True)
    for module in _plugin_modules():
        if hasattr(module, "pytest_addoption"):
            module.pytest_addoption(parser=parser)
    flags = {
        arg.names()[-1].removeprefix("--").replace("-", "_"): arg
        for group in parser._groups
        for arg in group.options
    }
    rows = [
        "| option | ini key | default | what |",
        "|---|---|---|---|",
    ]
    for name, (help_, _type, default) in parser._inidict.items():
        flag = flags.pop(name, None)
        option, what = "", str(help_)
        if flag is not None:
            attrs = flag.attrs()
            metavar = attrs.get("metavar") or ""
            value = f" {metavar}" if metavar and attrs.get("action") != "store_true" else ""
            if attrs.get("nargs") == "?":
                value = f"[={metavar}]"
            option = f"`{flag.names()[-1]}{value}`"
            flag_help = str(attrs.get("help", "")).removesuffix(f" (ini: {name})")
            if flag_help != what:
                what += f"; `{flag.names()[-1]}`: {flag_help}"
        shown = f"`{default}`" if default not in (None, "") else ""
        rows.append(f"| {option} | `{name}` | {shown} | {_cell(what)} |")
    for flag in flags.values():  # an option without an ini twin (there should be none)
        rows.append(f"| `{flag.names()[-1]}` | | | {_cell(flag.attrs().get('help', ''))} |")
    return "\n".join(rows)


def _listed(output: str, prefix: str) -> dict[str, str]:
    """``@pytest.mark.NAME...: text`` lines of ``pytest --markers`` by their head."""
    found = {}
    for line in output.splitlines():
        if line.startswith(prefix):
            head, _, text = line.partition(": ")
            found[head] = text
    return found


@functools.cache
def markers() -> str:
    with_plugin = _listed(_run(sys.executable, "-m", "pytest", "--markers"), "@pytest.mark.")
    without = _listed(
        _run(sys.executable, "-m", "pytest", "-p", "no:llamastate", "--markers"), "@pytest.mark."
    )
    ours = {head: text for head, text in with_plugin.items() if head not in without}
    if not ours:
        raise RuntimeError("pytest --markers lists no marker of pytest-llamastate")
    return "\n\n".join(f"`{head}`\n:   {text}" for head, text in ours.items())


@functools.cache
def fixtures() -> str:
    """The plugin's part of ``pytest --fixtures -v``: name, scope, and the whole docstring."""
    output = _run(sys.executable, "-m", "pytest", "--fixtures", "-v", "-p", "no:cacheprovider")
    sections = re.split(r"^-+ fixtures defined from (\S+) -+$", output, flags=re.MULTILINE)
    ours = [
        body
        for module, body in zip(sections[1::2], sections[2::2], strict=True)
        if module.startswith("pytest_llamastate")
    ]
    if not ours:
        raise RuntimeError("pytest --fixtures lists no fixture of pytest-llamastate")
    parts = []
    for body in ours:
        for block in re.split(r"\n(?=\S)", body.strip("\n")):
            head, _, doc = block.partition("\n")
            name, _, rest = head.partition(" ")
            scope = re.search(r"\[(\w+) scope\]", rest)
            where = f" ({scope.group(1)} scope)" if scope else " (function scope)"
            doc = textwrap.dedent(doc).strip()
            parts.append(f"### `{name}`\n\n*{where.strip()}*\n\n{_prose(doc)}")
    return "\n\n".join(parts)


def _prose(doc: str) -> str:
    """A docstring as Markdown: reST ``::`` literal blocks become fenced Python blocks."""
    out: list[str] = []
    lines = doc.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.rstrip().endswith("::") and not line.strip().startswith(".."):
            out.append(line.rstrip()[:-1])
            i += 1
            while i < len(lines) and not lines[i].strip():
                i += 1
            # Indented as reST wants it, or (after ``inspect.getdoc`` took the indent of a
            # docstring whose only other lines are the code) up to the next blank line.
            indented = i < len(lines) and lines[i].startswith(" ")
            block = []
            while i < len(lines) and (
                lines[i].startswith(" ") or (not lines[i].strip() and indented)
                if indented
                else lines[i].strip()
            ):
                block.append(lines[i])
                i += 1
            code = textwrap.dedent("\n".join(block)).strip("\n")
            out += ["", "```python", code, "```", ""]
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


@functools.cache
def hooks() -> str:
    manager = pytest.PytestPluginManager()
    before = set(vars(manager.hook))
    _plugin().pytest_addhooks(pluginmanager=manager)
    parts = []
    for name in sorted(set(vars(manager.hook)) - before, key=_hook_order(manager)):
        caller = getattr(manager.hook, name)
        assert caller.spec is not None, name
        function: Callable[..., Any] = caller.spec.function
        signature = f"def {name}{inspect.signature(function)}".replace("'", "")
        doc = inspect.getdoc(function) or ""
        parts.append(f"### `{name}`\n\n```python\n{signature}\n```\n\n{_prose(doc)}")
    if not parts:
        raise RuntimeError("the plugin adds no hookspecs")
    return "\n\n".join(parts)


def _hook_order(manager: pytest.PytestPluginManager) -> Callable[[str], int]:
    """In the order the hookspec module defines them (its docstring's order of calls)."""

    def line(name: str) -> int:
        return int(getattr(manager.hook, name).spec.function.__code__.co_firstlineno)

    return line


def _llamastate() -> list[str]:
    script = Path(sys.executable).with_name("llamastate")
    return [str(script)] if script.exists() else [sys.executable, "-m", "pytest_llamastate"]


@functools.cache
def cli() -> str:
    command = _llamastate()
    main = _run(*command, "--help")
    names = re.findall(r"^ {4}(\w+) {2,}", main, flags=re.MULTILINE)
    if not names:
        raise RuntimeError(f"no subcommands found in llamastate --help:\n{main}")
    parts = [f"```console\n$ llamastate --help\n{main.rstrip()}\n```"]
    for name in names:
        text = _run(*command, name, "--help")
        parts.append(
            f"### `llamastate {name}`\n\n```console\n$ llamastate {name} --help\n"
            f"{text.rstrip()}\n```"
        )
    return "\n\n".join(parts)


@functools.cache
def configs() -> str:
    root = resources.files("pytest_llamastate")
    files = sorted(Path(str(root)).rglob("*.yaml"))
    if not files:
        raise RuntimeError("no run configs found in the package")
    parts = []
    for path in files:
        relative = path.relative_to(Path(str(root)))
        parts.append(f"### `{relative}`\n\n```yaml\n{path.read_text().rstrip()}\n```")
    return "\n\n".join(parts)


PARTS: dict[str, Callable[[], str]] = {
    "options": options,
    "markers": markers,
    "fixtures": fixtures,
    "hooks": hooks,
    "cli": cli,
    "configs": configs,
}
