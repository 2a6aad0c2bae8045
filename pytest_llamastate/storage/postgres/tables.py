"""A store database's tables: counted for ``llamastate show``, searched and rewritten for
state templates.

A stack writes absolute paths into some rows (the files provider's ``file_path``); a
database copied ``TEMPLATE`` another still names the template's folder there, so each copy
rewrites them, as a copied SQLite file is rewritten.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .client import PostgresURL, quote_identifier, with_connection

__all__ = ["replace_text", "table_counts", "text_columns_with"]

_TEXT_COLUMNS = (
    "SELECT c.table_name, c.column_name FROM information_schema.columns c "
    "JOIN information_schema.tables t USING (table_schema, table_name) "
    "WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE' "
    "AND c.data_type IN ('text', 'character varying', 'json', 'jsonb') ORDER BY 1, 2"
)


def table_counts(url: str | PostgresURL) -> dict[str, int]:
    """Row count of every table of a store's database (what ``llamastate show`` lists)."""

    async def work(conn: Any) -> dict[str, int]:
        names = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
        )
        return {
            str(r["tablename"]): int(
                await conn.fetchval(f"SELECT count(*) FROM {quote_identifier(r[0])}")
            )
            for r in names
        }

    return with_connection(PostgresURL.parse(url), work)


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
