"""The ``llamastate`` command line: its commands, arguments and help texts.

The help texts are the command's reference (the docs print them as they are), so they live
apart from what the commands do (:mod:`.command`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import inspection

__all__ = ["parser"]


def parser() -> argparse.ArgumentParser:
    """The help texts are the command's reference: the docs print them as they are."""
    parser = argparse.ArgumentParser(
        prog="llamastate",
        description="Inspect and manage pytest-llamastate stores. Reads a store's files (or its "
        "own database) directly and never imports Llama Stack, so it works on a CI "
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

    show = command(
        "show",
        "what a store holds",
        "Its kind, label, creation time and other marker data (e.g. the template it "
        "started from), its toolgroups, the other registry entries by type, the kvstore's "
        "namespaces and the SQL tables with their row counts (sql_store.db, or the store's "
        "own database).",
    )
    show.add_argument("store", type=Path, metavar="STORE")
    show.add_argument(
        "--json",
        action="store_true",
        help="one JSON object: path, kind, label, created, toolgroups, registry, "
        "kv_namespaces, sql_tables, marker",
    )

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

    env = command(
        "env",
        "export lines for a store's variables",
        "The variables a test's llama_store sets (SQLITE_STORE_DIR, FILES_STORAGE_DIR, "
        "MILVUS_DB_PATH, the config folders), then, when the store has a stack.yaml, a "
        "commented command that runs a stack on it on a free port. To reproduce a "
        'failure by hand: eval "$(llamastate env STORE)".',
    )
    env.add_argument("store", type=Path, metavar="STORE")

    reset = command(
        "reset",
        "delete persistent stores",
        "Asks first (no answer is no). Deletes only folders with the plugin's marker that "
        "are persistent stores; a store with a database of its own loses that too.",
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
    return parser
