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
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from ..releases import detect
from ..stack.engine import container_run_line
from ..state.registry import RegistryEntry, StoreCorruptError
from ..state.store import MARKER_NAME, LlamaStore, is_store, remove_store
from ..storage.postgres.backend import reachable
from ..storage.postgres.client import PostgresError
from ..storage.postgres.janitor import Janitor
from . import inspection

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
    return resources.enter_context(reachable(LlamaStore.open(_checked(path))))


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
        except (StoreCorruptError, PostgresError):
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
        if name == "database" and store.database is not None:  # where it is now
            value = store.database.url.masked
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
    where = f"database {store.database.name}" if store.database else "SQLite"
    print(f"{where} tables ({len(doc['sql_tables'])}):")
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
        database = _open(path, args.resources).database
        if remove_store(path):  # checked again right before: never delete an unmarked folder
            print(f"removed {path}")
        if database is not None:
            admin = Janitor(database.url.with_database("postgres"), run_id="llamastate-reset")
            try:
                if admin.drop(database.name):
                    print(f"dropped database {database.name}")
            finally:
                admin.close()
    return 0


# --- entry point -----------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    """The help texts are the command's reference: the docs print them as they are."""
    parser = argparse.ArgumentParser(
        prog="llamastate",
        description="Inspect and manage pytest-llamastate stores. Reads a store's files (or its "
        "Postgres database) directly and never imports Llama Stack, so it works on a CI "
        "artifact or a store made by another release.",
        epilog="exit codes: 0 success (diff: no differences); 1 diff found differences, or "
        "reset was not confirmed; 2 bad input, reported as one line on stderr naming the "
        "path and the problem",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name, help=summary, description=f"{summary[0].upper()}{summary[1:]}. {description}"
        )

    ls = command(
        "ls",
        "list stores, newest first",
        "Columns: PATH, KIND (test, persistent, template, ...), LABEL (the test or store "
        "name), AGE, SIZE, TOOLGROUPS. Without BASE it searches "
        f"./{inspection.PERSIST_DIR} (this project's persistent stores), "
        f"./{inspection.TEMPLATE_DIR} (kept state templates) and the newest 3 pytest "
        "basetemps (which hold other projects' stores too); name a --llama-store-dir "
        "folder to list it. Relative folders are relative to where you run it: run it "
        "from the rootdir.",
    )
    ls.add_argument("bases", nargs="*", type=Path, metavar="BASE", help="folders to search")
    ls.set_defaults(func=cmd_ls)

    show = command(
        "show",
        "what a store holds",
        "Its kind, label, creation time and other marker data (e.g. the template it "
        "started from), its toolgroups, the other registry entries by type, and the SQL "
        "tables with their row counts (sql_store.db, or the store's Postgres database).",
    )
    show.add_argument("store", type=Path, metavar="STORE")
    show.add_argument(
        "--json",
        action="store_true",
        help="one JSON object: path, kind, label, created, toolgroups, registry, sql_tables, "
        "marker",
    )
    show.set_defaults(func=cmd_show)

    diff = command(
        "diff",
        "registry changes from store A to store B",
        "One line per registry row: + added, - removed, ~ changed (with the fields that "
        "changed). Exit code 1 when the stores differ, 0 when they do not.",
    )
    diff.add_argument("a", type=Path, metavar="A")
    diff.add_argument("b", type=Path, metavar="B")
    diff.add_argument(
        "--json", action="store_true", help="one JSON object: a, b, added, removed, changed"
    )
    diff.set_defaults(func=cmd_diff)

    env = command(
        "env",
        "export lines for a store's variables",
        "The variables a test's llama_store sets (SQLITE_STORE_DIR, FILES_STORAGE_DIR, "
        "MILVUS_DB_PATH, the config folders), then, when the store has a stack.yaml, a "
        "commented command that runs a stack on it on a free port. To reproduce a "
        'failure by hand: eval "$(llamastate env STORE)".',
    )
    env.add_argument("store", type=Path, metavar="STORE")
    env.set_defaults(func=cmd_env)

    reset = command(
        "reset",
        "delete persistent stores",
        "Asks first (no answer is no). Deletes only folders with the plugin's marker that "
        "are persistent stores; on Postgres, drops their databases too.",
    )
    reset.add_argument("names", nargs="*", metavar="NAME", help="persistent store names")
    reset.add_argument("--all", action="store_true", help="every persistent store")
    reset.add_argument("--yes", "-y", action="store_true", help="do not ask")
    reset.add_argument(
        "--persist-dir",
        type=Path,
        default=inspection.PERSIST_DIR,
        metavar="DIR",
        help=f"where persistent stores are (default: ./{inspection.PERSIST_DIR}; give the "
        "folder of --llama-persist-dir if you set it)",
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
        with ExitStack() as args.resources:
            return int(args.func(args))
    except (CliError, StoreCorruptError, PostgresError) as exc:
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
