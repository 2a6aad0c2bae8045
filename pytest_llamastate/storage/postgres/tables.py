"""A store database's tables: counted for ``llamastate show``, read whole for the shared-store
leak report, checked for a persistent store, searched and rewritten for state templates.

A stack writes absolute paths into some rows (the files provider's ``file_path``); a
database copied ``TEMPLATE`` another still names the template's folder there, so each copy
rewrites them, as a copied SQLite file is rewritten.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .client import PostgresError, PostgresURL, quote_identifier, with_connection

__all__ = ["integrity_problems", "replace_text", "table_counts", "table_rows", "text_columns_with"]

_TABLES = "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"

_TEXT_COLUMNS = (
    "SELECT c.table_name, c.column_name FROM information_schema.columns c "
    "JOIN information_schema.tables t USING (table_schema, table_name) "
    "WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE' "
    "AND c.data_type IN ('text', 'character varying', 'json', 'jsonb') ORDER BY 1, 2"
)


#: The columns of a ``kv_postgres`` table (any ``table_name``): keys, not rows, are its content.
_KV_COLUMNS = {"key", "value", "expiration"}


def table_counts(url: str | PostgresURL) -> tuple[dict[str, int], dict[str, int]]:
    """What ``llamastate show`` lists of a store's database: rows per kv namespace (a key's
    first ``:`` segment) over every kv table, and rows per other table."""

    async def work(conn: Any) -> tuple[dict[str, int], dict[str, int]]:
        columns: dict[str, set[str]] = {}
        for row in await conn.fetch(
            "SELECT c.table_name, c.column_name FROM information_schema.columns c "
            "JOIN pg_tables t ON t.schemaname = c.table_schema AND t.tablename = c.table_name "
            "WHERE c.table_schema = 'public'"
        ):
            columns.setdefault(str(row[0]), set()).add(str(row[1]))
        kv: dict[str, int] = {}
        tables: dict[str, int] = {}
        for name in sorted(columns):
            table = quote_identifier(name)
            if columns[name] == _KV_COLUMNS:
                for prefix, count in await conn.fetch(
                    f"SELECT split_part(key, ':', 1), count(*) FROM {table} GROUP BY 1"
                ):
                    kv[str(prefix)] = kv.get(str(prefix), 0) + int(count)
            else:
                tables[name] = int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
        return dict(sorted(kv.items())), tables

    return with_connection(PostgresURL.parse(url), work)


def table_rows(url: str | PostgresURL) -> dict[str, frozenset[tuple[Any, ...]]]:
    """Every row of every table, by table name (what a test left in a shared store)."""

    async def work(conn: Any) -> dict[str, frozenset[tuple[Any, ...]]]:
        tables = {}
        for (name,) in await conn.fetch(_TABLES):
            rows = await conn.fetch(f"SELECT * FROM {quote_identifier(name)}")
            tables[str(name)] = frozenset(tuple(r.values()) for r in rows)
        return tables

    return with_connection(PostgresURL.parse(url), work)


def integrity_problems(url: str | PostgresURL) -> list[str]:
    """One line per reason a stack could not use the database again: it is gone or cannot
    be reached, or a table cannot be read in full.

    Page-level damage is the server's to catch (checksums, WAL); what breaks a kept
    store's database is it being dropped, or its tables, under the store."""
    parsed = PostgresURL.parse(url)

    async def work(conn: Any) -> list[str]:
        problems = []
        for (name,) in await conn.fetch(_TABLES):
            try:
                await conn.fetchval(f"SELECT count(*) FROM {quote_identifier(name)}")
            except Exception as exc:  # the driver's own error types: asyncpg is optional
                problems.append(f"{parsed.masked}: table {name}: {type(exc).__name__}: {exc}")
        return problems

    try:
        return with_connection(parsed, work)
    except PostgresError as exc:
        return [str(exc)]


def text_columns_with(url: str | PostgresURL, needle: str) -> list[tuple[str, str]]:
    """Every (table, column) of text that holds ``needle`` somewhere."""

    async def work(conn: Any) -> list[tuple[str, str]]:
        found = []
        for table, column in await conn.fetch(_TEXT_COLUMNS):
            t, c = quote_identifier(table), quote_identifier(column)
            if await conn.fetchval(f"SELECT 1 FROM {t} WHERE strpos({c}::text, $1) > 0", needle):
                found.append((str(table), str(column)))
        return found

    return with_connection(PostgresURL.parse(url), work)


def replace_text(
    url: str | PostgresURL, columns: Iterable[tuple[str, str]], old: str, new: str
) -> None:
    """``old`` becomes ``new`` in each of ``columns``, in one transaction."""
    columns = list(columns)

    async def work(conn: Any) -> None:
        async with conn.transaction():
            for table, column in columns:
                t, c = quote_identifier(table), quote_identifier(column)
                kind = await conn.fetchval(
                    "SELECT data_type FROM information_schema.columns WHERE table_schema = "
                    "'public' AND table_name = $1 AND column_name = $2",
                    table,
                    column,
                )
                cast = f"::{kind}" if kind in ("json", "jsonb") else ""
                await conn.execute(
                    f"UPDATE {t} SET {c} = replace({c}::text, $1, $2){cast} "
                    f"WHERE strpos({c}::text, $1) > 0",
                    old,
                    new,
                )

    with_connection(PostgresURL.parse(url), work)
