"""``llamastate``: look at, compare, point a shell at, and reset stores after the run.

A kept store is only useful if you can see what is in it without starting a stack, so
this command reads the files directly and never imports Llama Stack (it works on a CI
artifact, or a store made by another release). Commands::

    llamastate ls [BASE ...]             stores under BASE (default: ./.pytest_cache/d/llamastate
                                         and the newest 3 pytest basetemps)
    llamastate show STORE [--json]       marker, toolgroups, registry, SQL tables
    llamastate diff A B [--json]         registry rows added / removed / changed from A to B
    llamastate env STORE                 ``export`` lines: eval "$(llamastate env STORE)"
    llamastate reset [NAME ...] [--all] [--yes] [--persist-dir DIR]
                                         delete persistent stores (asks first)

Exit codes: 0 success; 1 ``diff`` found differences, or ``reset`` was not confirmed
(nothing deleted); 2 bad input (not a store, unreadable database, unknown name, usage),
reported as one line ``llamastate: <path>: <problem>`` on stderr. ``ls`` lists a store
whose database cannot be read with ``?`` toolgroups instead of failing the whole listing.

``show --json`` prints one object::

    {"path": str,                 # absolute store folder
     "kind": str,                 # "test" | "persistent" | "run" | "base" | "" (no marker data)
     "label": str,                # test node id, or the persistent store's name
     "created": float | null,     # unix time from the marker
     "toolgroups": [{"identifier": str, "provider_id": str | null,
                     "mcp_endpoint": str | null, "args": object | null}],  # by identifier
     "registry": {type: [identifier, ...]},  # every registry row, tool_group included
     "kv_namespaces": {namespace: row_count},  # every kv table's keys by first ":" part
     "sql_tables": {table: row_count},       # every other table: of sql_store.db, of
                                             # another *.db as "file:table", or the database
     "marker": object}            # the whole .llamastate.json (e.g. a persistent "fingerprint")

``diff --json`` prints ``{"a": str, "b": str, "added": [row], "removed": [row],
"changed": [{"key", "type", "identifier", "fields": [str], "before": object, "after":
object}]}``, a row being ``{"key", "type", "identifier", "value"}``; lists sorted by key.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..releases import detect
from ..stack.engine import container_run_line
from ..state.registry import RegistryEntry, StoreCorruptError
from ..state.store import MARKER_NAME, LlamaStore, is_store, remove_store
from ..storage.base import StorageError
from . import command_line, inspection

__all__ = ["main"]


class CliError(Exception):
    """Bad input: ends the command with exit code 2 and one line on stderr."""

    def __init__(self, path: Path | str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")


# --- reading stores ------------------------------------------------------------------


def _checked(path: Path) -> Path:
    """``path`` made absolute (so ``env`` exports survive a ``cd``), if it is a store."""
    if not path.is_dir():
        raise CliError(path, "not a folder" if path.exists() else "no such folder")
    if not is_store(path):
        raise CliError(path, f"not a pytest-llamastate store (no {MARKER_NAME})")
    return path.resolve()


def _open(path: Path, resources: ExitStack) -> LlamaStore:
    """The store at ``path``, its database within reach until the command ends."""
    store = LlamaStore.open(_checked(path))
    return replace(store, tables=resources.enter_context(store.tables.reachable()))


# --- ls --------------------------------------------------------------------------------


def cmd_ls(args: argparse.Namespace) -> int:
    """Table of stores, newest first, so the failure you just had is on top."""
    bases: list[Path] = args.bases or inspection.default_bases()
    for base in args.bases:
        if not base.is_dir():
            raise CliError(base, "no such folder")
    now = time.time()
    rows = []
    for path in dict.fromkeys(
        p for base in bases if base.is_dir() for p in inspection.find_stores(base)
    ):
        kind, label, created = inspection.marker(path)
        try:
            toolgroups = str(len(_open(path, args.resources).toolgroups()))
        except (StoreCorruptError, StorageError):
            toolgroups = "?"  # one damaged store must not hide the others; show says why
        age = inspection.age(created, now)
        cells = [
            str(path),
            kind,
            label,
            age,
            inspection.human_size(inspection.size(path)),
            toolgroups,
        ]
        rows.append((created or 0.0, [cell or "-" for cell in cells]))  # no empty columns
    if not rows:
        print("no stores under " + ", ".join(map(str, bases)), file=sys.stderr)
        return 0
    table = [["PATH", "KIND", "LABEL", "AGE", "SIZE", "TOOLGROUPS"]]
    table += [cells for _, cells in sorted(rows, key=lambda r: r[0], reverse=True)]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


# --- show ------------------------------------------------------------------------------


def cmd_show(args: argparse.Namespace) -> int:
    store = _open(args.store, args.resources)
    doc = inspection.describe(store)
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
        return 0
    created = doc["created"]
    when = "?"
    if created is not None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created))
        when = f"{stamp} ({inspection.age(created, time.time())} ago)"
    print(f"path:     {doc['path']}")
    print(f"kind:     {doc['kind'] or '?'}")
    print(f"label:    {doc['label']}")
    print(f"created:  {when}")
    for name, value in doc["marker"].items():
        if name == "database" and store.tables.location:  # where it is now
            value = store.tables.location
        if name not in ("kind", "label", "created"):
            print(f"{name + ':':<9} {value}")
    print(f"toolgroups ({len(doc['toolgroups'])}):")
    for tg in doc["toolgroups"]:
        line = f"  {tg['identifier']}  provider={tg['provider_id']}"
        if tg["mcp_endpoint"]:
            line += f"  mcp_endpoint={tg['mcp_endpoint']}"
        if tg["args"]:
            line += f"  args={json.dumps(tg['args'], sort_keys=True)}"
        print(line)
    others = {t: ids for t, ids in doc["registry"].items() if t != "tool_group"}
    print(f"other registry entries ({sum(map(len, others.values()))}):")
    for type_, ids in others.items():
        print(f"  {type_} ({len(ids)}): {', '.join(ids)}")
    print(f"kv namespaces ({len(doc['kv_namespaces'])}):")
    for namespace, count in doc["kv_namespaces"].items():
        print(f"  {namespace}: {count} rows")
    print(f"{store.tables.title} tables ({len(doc['sql_tables'])}):")
    for table, count in doc["sql_tables"].items():
        print(f"  {table}: {count} rows")
    return 0


# --- diff ------------------------------------------------------------------------------


def _row(entry: RegistryEntry) -> dict[str, Any]:
    return {"key": entry.key, "type": entry.type, "identifier": entry.identifier}


def cmd_diff(args: argparse.Namespace) -> int:
    """Registry rows from A to B, matched by full key (so a v9 -> v10 move is -/+)."""
    store_a, store_b = _open(args.a, args.resources), _open(args.b, args.resources)
    snap_a, snap_b = (s.snapshot() for s in (store_a, store_b))
    diff = snap_a.diff(snap_b)
    if args.json:
        doc = {
            "a": str(store_a.path),
            "b": str(store_b.path),
            "added": [{**_row(e), "value": e.value} for e in diff.added],
            "removed": [{**_row(e), "value": e.value} for e in diff.removed],
            "changed": [
                {
                    **_row(new),
                    "fields": diff.changed_fields(old, new),
                    "before": old.value,
                    "after": new.value,
                }
                for old, new in diff.changed
            ],
        }
        print(json.dumps(doc, indent=2))
    else:
        for line in diff.lines(fields=True):
            print(line)
    return 1 if diff else 0


# --- env -------------------------------------------------------------------------------


def cmd_env(args: argparse.Namespace) -> int:
    """Lines for ``eval``: the same variables ``llama_store`` sets while a test runs."""
    store = LlamaStore.open(_checked(args.store))
    for name, value in store.env.items():
        print(f"export {name}={shlex.quote(value)}")
    if store.config_path.is_file():
        flavor = detect()  # the installed one (metadata only, nothing imported)
        # A port free now: the copied config's 8321 is likely a developer's running stack.
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        container = LlamaStore.read_marker(store.path).get("container")
        if isinstance(container, dict):  # served by a container: the line that reopens it
            print(f"# {container_run_line(store, container, port)}")
        else:
            print(f"# {shlex.join(flavor.run_command(store.config_path, port))}")
    return 0


# --- reset -----------------------------------------------------------------------------


def _persistent(folder: Path, name: str) -> Path:
    """``folder/name`` if it is a persistent store; anything else is refused, not deleted."""
    path = folder / name
    if name in ("", ".", "..") or Path(name).name != name:
        raise CliError(path, "not a store name (a plain folder name is expected)")
    if not path.is_dir():
        raise CliError(path, "no such persistent store")
    if not is_store(path):
        raise CliError(path, f"not a pytest-llamastate store (no {MARKER_NAME}); not deleted")
    kind = inspection.marker(path)[0]
    if kind != "persistent":
        raise CliError(path, f"a {kind or 'unknown'} store, not a persistent one; not deleted")
    return path


def _confirm(paths: list[Path]) -> bool:
    """Ask on stdin; no answer (EOF, no terminal) is no, so scripts never delete by accident."""
    listing = "".join(f"  {p}\n" for p in paths)
    print(f"reset {len(paths)} persistent store(s)?\n{listing}[y/N] ", end="", file=sys.stderr)
    sys.stderr.flush()
    answer = sys.stdin.readline() if sys.stdin is not None else ""
    return answer.strip().lower() in ("y", "yes")


def cmd_reset(args: argparse.Namespace) -> int:
    """Delete persistent stores, so the next run rebuilds them from scratch."""
    folder: Path = args.persist_dir
    if args.all:
        names = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        paths = [folder / n for n in names if is_store(folder / n)]
        paths = [p for p in paths if inspection.marker(p)[0] == "persistent"]
    else:
        paths = [_persistent(folder, name) for name in dict.fromkeys(args.names)]
    if not paths:
        print(f"no persistent stores in {folder}", file=sys.stderr)
        return 0
    if not args.yes and not _confirm(paths):
        print("nothing reset", file=sys.stderr)
        return 1
    for path in paths:
        tables = _open(path, args.resources).tables
        if remove_store(path):  # checked again right before: never delete an unmarked folder
            print(f"removed {path}")
        for line in tables.drop():
            print(line)
    return 0


# --- entry point -----------------------------------------------------------------------


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "ls": cmd_ls,
    "show": cmd_show,
    "diff": cmd_diff,
    "env": cmd_env,
    "reset": cmd_reset,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; every expected failure is one stderr line and exit code 2."""
    parser = command_line.parser()
    args = parser.parse_args(argv)
    if args.command == "reset" and bool(args.names) == args.all:
        parser.error("reset: give NAME ... or --all (not both)")
    try:
        with ExitStack() as args.resources:
            return COMMANDS[args.command](args)
    except (CliError, StoreCorruptError, StorageError) as exc:
        problem = str(exc)
    except BrokenPipeError:  # `llamastate ls | head`: the reader is gone, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        problem = f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc)
    except KeyboardInterrupt:
        return 130
    print(f"llamastate: {problem}", file=sys.stderr)
    return 2
