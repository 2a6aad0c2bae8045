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
     "sql_tables": {table: row_count},       # tables of sql_store.db ({} if none)
     "marker": object}            # the whole .llamastate.json (e.g. a persistent "fingerprint")

``diff --json`` prints ``{"a": str, "b": str, "added": [row], "removed": [row],
"changed": [{"key", "type", "identifier", "fields": [str], "before": object, "after":
object}]}``, a row being ``{"key", "type", "identifier", "value"}``; lists sorted by key.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import shlex
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

from .flavor import detect
from .registry import (
    RegistryEntry,
    StoreCorruptError,
    ToolgroupRecord,
    connect,
    read_entries,
)
from .store import MARKER_NAME, LlamaStore, is_store, remove_store

__all__ = ["main"]

#: Kinds ``ls`` lists; "run" and "base" folders only hold stores, so it looks inside them.
_LISTED_KINDS = ("test", "persistent")
_PERSIST_DIR = Path(".pytest_cache") / "d" / "llamastate"
#: How many of the newest ``pytest-N`` basetemps ``ls`` searches by default.
_BASETEMPS = 3


class CliError(Exception):
    """Bad input: ends the command with exit code 2 and one line on stderr."""

    def __init__(self, path: Path | str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")


# --- reading stores ------------------------------------------------------------------


def _open(path: Path) -> LlamaStore:
    """The store at ``path`` (made absolute, so ``env`` exports survive a ``cd``)."""
    if not path.is_dir():
        raise CliError(path, "not a folder" if path.exists() else "no such folder")
    if not is_store(path):
        raise CliError(path, f"not a pytest-llamastate store (no {MARKER_NAME})")
    return LlamaStore.open(path.resolve())


def _marker(path: Path) -> tuple[str, str, float | None]:
    """Kind, label and creation time; a damaged marker gives ``("", "", None)``."""
    data = LlamaStore.read_marker(path)
    created = data.get("created")
    if isinstance(created, bool) or not isinstance(created, int | float):
        created = None
    return str(data.get("kind", "")), str(data.get("label", "")), created


def _tables(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name"
    ).fetchall()
    return [str(name) for (name,) in rows]


def _sql_tables(db: Path) -> dict[str, int]:
    """Row count of every table in ``sql_store.db``; ``{}`` when there is none."""
    if not db.exists():
        return {}
    with connect(db) as conn:
        counts = {}
        for name in _tables(conn):
            quoted = '"' + name.replace('"', '""') + '"'
            counts[name] = int(conn.execute(f"SELECT COUNT(*) FROM {quoted}").fetchone()[0])
        return counts


def _size(path: Path) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            with suppress(OSError):  # removed meanwhile
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


def _human_size(size: float) -> str:
    for unit in ("B", "K", "M", "G"):
        if size < 1024:
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return f"{size:.1f}T"


def _age(created: float | None, now: float) -> str:
    if created is None:
        return "?"
    seconds = max(0.0, now - created)
    for limit, unit_seconds, unit in ((60, 1, "s"), (3600, 60, "m"), (86400, 3600, "h")):
        if seconds < limit:
            return f"{int(seconds // unit_seconds)}{unit}"
    return f"{int(seconds // 86400)}d"


# --- ls --------------------------------------------------------------------------------


def _default_bases() -> list[Path]:
    """Where stores usually are: this project's persistent stores, then recent basetemps.

    Found the way pytest names them (``PYTEST_DEBUG_TEMPROOT`` or the temp dir, then
    ``pytest-of-<user>/pytest-<N>``), newest first.
    """
    try:
        user = getpass.getuser()
    except (ImportError, OSError, KeyError):
        user = "unknown"
    temproot = Path(os.environ.get("PYTEST_DEBUG_TEMPROOT") or tempfile.gettempdir())
    numbered = [
        (int(p.name[len("pytest-") :]), p)
        for p in (temproot / f"pytest-of-{user}").glob("pytest-*")
        if p.name[len("pytest-") :].isdigit()
    ]
    newest = [p for _, p in sorted(numbered, reverse=True)[:_BASETEMPS]]
    return [_PERSIST_DIR, *newest]


def _find(base: Path) -> Iterator[Path]:
    """Stores of a listed kind at or under ``base``; never inside one, never via symlinks.

    A loop, not recursion: a deep tree in some test's ``tmp_path`` must not end ``ls``.
    """
    pending = [base]
    while pending:
        folder = pending.pop()
        if is_store(folder) and _marker(folder)[0] in _LISTED_KINDS:
            yield folder
            continue
        try:
            children = sorted(os.scandir(folder), key=lambda e: e.name, reverse=True)
        except OSError:  # unreadable (another user's basetemp) or gone meanwhile
            continue
        pending += [Path(c.path) for c in children if c.is_dir(follow_symlinks=False)]


def cmd_ls(args: argparse.Namespace) -> int:
    """Table of stores, newest first, so the failure you just had is on top."""
    bases: list[Path] = args.bases or _default_bases()
    for base in args.bases:
        if not base.is_dir():
            raise CliError(base, "no such folder")
    now = time.time()
    rows = []
    for path in dict.fromkeys(p for base in bases if base.is_dir() for p in _find(base)):
        kind, label, created = _marker(path)
        try:
            toolgroups = str(len(LlamaStore(path).toolgroups()))
        except StoreCorruptError:
            toolgroups = "?"  # one damaged store must not hide the others; show says why
        age = _age(created, now)
        cells = [str(path), kind, label, age, _human_size(_size(path)), toolgroups]
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


def _describe(store: LlamaStore) -> dict[str, Any]:
    """The ``show --json`` document; the text output is rendered from it, so both agree."""
    kind, label, created = _marker(store.path)
    marker = LlamaStore.read_marker(store.path)
    entries = read_entries(store.kvstore_path)
    toolgroups = sorted(
        (ToolgroupRecord.from_entry(e) for e in entries if e.type == "tool_group"),
        key=lambda t: t.identifier,
    )
    registry: dict[str, list[str]] = {}
    for entry in entries:
        registry.setdefault(entry.type, []).append(entry.identifier)
    return {
        "path": str(store.path),
        "kind": kind,
        "label": label,
        "created": created,
        "toolgroups": [
            {
                "identifier": t.identifier,
                "provider_id": t.provider_id,
                "mcp_endpoint": t.mcp_endpoint,
                "args": dict(t.args) if t.args is not None else None,
            }
            for t in toolgroups
        ],
        "registry": {t: sorted(ids) for t, ids in sorted(registry.items())},
        "sql_tables": _sql_tables(store.sqlstore_path),
        "marker": marker,
    }


def cmd_show(args: argparse.Namespace) -> int:
    doc = _describe(_open(args.store))
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
        return 0
    created = doc["created"]
    when = "?"
    if created is not None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created))
        when = f"{stamp} ({_age(created, time.time())} ago)"
    print(f"path:     {doc['path']}")
    print(f"kind:     {doc['kind'] or '?'}")
    print(f"label:    {doc['label']}")
    print(f"created:  {when}")
    for name, value in doc["marker"].items():
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
    print(f"sql_store.db tables ({len(doc['sql_tables'])}):")
    for table, count in doc["sql_tables"].items():
        print(f"  {table}: {count} rows")
    return 0


# --- diff ------------------------------------------------------------------------------


def _row(entry: RegistryEntry) -> dict[str, Any]:
    return {"key": entry.key, "type": entry.type, "identifier": entry.identifier}


def cmd_diff(args: argparse.Namespace) -> int:
    """Registry rows from A to B, matched by full key (so a v9 -> v10 move is -/+)."""
    store_a, store_b = _open(args.a), _open(args.b)
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
    store = _open(args.store)
    for name, value in store.env.items():
        print(f"export {name}={shlex.quote(value)}")
    config = store.path / "stack.yaml"
    if config.is_file():
        flavor = detect()  # the installed one (metadata only, nothing imported)
        command = [flavor.cli, *flavor.run_args, str(config), *flavor.server_flags]
        print(f"# {shlex.join(command)}")
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
    kind = _marker(path)[0]
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
        paths = [p for p in paths if _marker(p)[0] == "persistent"]
    else:
        paths = [_persistent(folder, name) for name in dict.fromkeys(args.names)]
    if not paths:
        print(f"no persistent stores in {folder}", file=sys.stderr)
        return 0
    if not args.yes and not _confirm(paths):
        print("nothing reset", file=sys.stderr)
        return 1
    for path in paths:
        if remove_store(path):  # checked again right before: never delete an unmarked folder
            print(f"removed {path}")
    return 0


# --- entry point -----------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llamastate", description="Inspect and manage pytest-llamastate stores."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ls = sub.add_parser("ls", help="list stores")
    ls.add_argument("bases", nargs="*", type=Path, metavar="BASE", help="folders to search")
    ls.set_defaults(func=cmd_ls)

    show = sub.add_parser("show", help="what a store holds")
    show.add_argument("store", type=Path, metavar="STORE")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(func=cmd_show)

    diff = sub.add_parser("diff", help="registry changes from store A to store B")
    diff.add_argument("a", type=Path, metavar="A")
    diff.add_argument("b", type=Path, metavar="B")
    diff.add_argument("--json", action="store_true", help="machine-readable output")
    diff.set_defaults(func=cmd_diff)

    env = sub.add_parser("env", help='export lines: eval "$(llamastate env STORE)"')
    env.add_argument("store", type=Path, metavar="STORE")
    env.set_defaults(func=cmd_env)

    reset = sub.add_parser("reset", help="delete persistent stores")
    reset.add_argument("names", nargs="*", metavar="NAME", help="persistent store names")
    reset.add_argument("--all", action="store_true", help="every persistent store")
    reset.add_argument("--yes", "-y", action="store_true", help="do not ask")
    reset.add_argument(
        "--persist-dir",
        type=Path,
        default=_PERSIST_DIR,
        metavar="DIR",
        help=f"where persistent stores are (default: ./{_PERSIST_DIR})",
    )
    reset.set_defaults(func=cmd_reset)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; every expected failure is one stderr line and exit code 2."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "reset" and bool(args.names) == args.all:
        parser.error("reset: give NAME ... or --all (not both)")
    try:
        return int(args.func(args))
    except (CliError, StoreCorruptError) as exc:
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
