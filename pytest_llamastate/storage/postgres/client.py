"""Postgres for stores: URLs, the driver, the variables a stack reads, and registry rows.

With ``kv_postgres`` / ``sql_postgres`` backends a stack's state lives in a database, not a
folder, so isolation is a database per store: created (from a template holding the seeds)
before a stack starts, dropped afterwards, recognisable by name so that what a killed run
left behind can be pruned. The driver is ``asyncpg``, which llama-stack 0.7 and OGX both
ship already; it is imported on first use, so importing this module costs nothing without
the ``[postgres]`` extra. It is async, so every call runs on one private event loop thread:
that works whether or not the caller's thread runs a loop of its own (a library stack's).
Every driver error becomes a one-line :class:`PostgresError` naming the URL (password
masked) and the fix; no asyncpg traceback reaches a user.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import os
import re
import threading
import urllib.parse
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from ...releases import LLAMA_STACK, Flavor
from ...releases.install import install_command
from ..base import StorageError

__all__ = [
    "DB_PREFIX",
    "PostgresError",
    "PostgresURL",
    "check_server",
    "database_name",
    "database_url",
    "env_for",
    "explain_error",
    "is_unreachable",
    "kv_table",
    "open_connection",
    "quote_identifier",
    "read_kv_rows",
    "run_coroutine",
    "with_connection",
    "write_kv_rows",
]

#: Every database the plugin creates starts with this; nothing else is ever dropped.
DB_PREFIX = "llamastate_"
_TIMEOUT = 30.0
_T = TypeVar("_T")


class PostgresError(StorageError):
    """A Postgres server cannot be used; one line naming the URL (password masked) and the fix."""


@dataclass(frozen=True)
class PostgresURL:
    """``postgresql://user:password@host:port/database``, parsed once."""

    user: str
    password: str
    host: str
    port: int
    database: str

    @classmethod
    def parse(cls, url: str | PostgresURL) -> PostgresURL:
        if isinstance(url, PostgresURL):
            return url
        parts = urllib.parse.urlsplit(url)
        try:
            port = parts.port or 5432
        except ValueError:
            port = -1
        if parts.scheme not in ("postgresql", "postgres") or not parts.hostname or port < 0:
            raise PostgresError(
                f"{_mask(url)}: not a Postgres URL; use postgresql://USER:PASSWORD@HOST:PORT/DB"
            )
        return cls(
            user=urllib.parse.unquote(parts.username or "postgres"),
            password=urllib.parse.unquote(parts.password or ""),
            host=parts.hostname,
            port=port,
            database=urllib.parse.unquote(parts.path.lstrip("/")) or "postgres",
        )

    def with_database(self, database: str) -> PostgresURL:
        return replace(self, database=database)

    def _render(self, password: str) -> str:
        q = urllib.parse.quote
        auth = q(self.user, safe="") + (f":{password}" if password else "")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"postgresql://{auth}@{host}:{self.port}/{q(self.database, safe='')}"

    def __str__(self) -> str:
        """The full URL, password included: what ``psql "<url>"`` takes."""
        return self._render(urllib.parse.quote(self.password, safe=""))

    @property
    def masked(self) -> str:
        """The URL for messages: ``postgresql://user:***@host:5432/db``."""
        return self._render("***" if self.password else "")

    def env(self) -> dict[str, str]:
        """``POSTGRES_HOST`` ... ``POSTGRES_PASSWORD``: what Postgres run configs read."""
        return {
            "POSTGRES_HOST": self.host,
            "POSTGRES_PORT": str(self.port),
            "POSTGRES_DB": self.database,
            "POSTGRES_USER": self.user,
            "POSTGRES_PASSWORD": self.password,
        }


def _mask(url: str) -> str:
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def env_for(url: str | PostgresURL, database: str | None = None) -> dict[str, str]:
    """The ``POSTGRES_*`` variables pointing a stack at ``database`` (default: the URL's)."""
    parsed = PostgresURL.parse(url)
    return (parsed.with_database(database) if database else parsed).env()


def database_url(url: str | PostgresURL, database: str) -> str:
    """The URL of ``database`` on the server of ``url``, for ``psql "<url>"``."""
    return str(PostgresURL.parse(url).with_database(database))


def database_name(*parts: str) -> str:
    """``llamastate_<parts>``: lowercase, ``[a-z0-9_]`` only, at most 63 bytes.

    Postgres folds and truncates identifiers silently; a name shortened here gets a hash
    suffix, so two long labels never end up naming one database.
    """
    body = re.sub(r"[^a-z0-9_]+", "_", "_".join(parts).lower()).strip("_") or "db"
    name = DB_PREFIX + body
    if len(name) > 63:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = f"{name[: 63 - 9]}_{digest}"
    return name


def kv_table(flavor: Flavor) -> str:
    """The default ``kv_postgres`` ``table_name`` of ``flavor``."""
    return flavor.postgres_kv_table


def quote_identifier(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _table(name: str) -> str:
    """A kv table as the stacks name it: unquoted in their SQL, so folded to lowercase."""
    return quote_identifier(name.lower())


# -- the driver, on a private loop --------------------------------------------------------

_loop: asyncio.AbstractEventLoop | None = None
_loop_pid = 0
_loop_lock = threading.Lock()


def run_coroutine(coro: Coroutine[Any, Any, _T], timeout: float = _TIMEOUT) -> _T:
    """Run ``coro`` on the module's loop thread (made on first use, again after a fork)."""
    global _loop, _loop_pid
    with _loop_lock:
        if _loop is None or _loop_pid != os.getpid():
            _loop, _loop_pid = asyncio.new_event_loop(), os.getpid()
            threading.Thread(target=_loop.run_forever, name="llamastate-pg", daemon=True).start()
        loop = _loop
    return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)


def _driver(url: PostgresURL) -> Any:
    try:
        return importlib.import_module("asyncpg")
    except ModuleNotFoundError:
        raise PostgresError(
            f"{url.masked}: the Postgres driver asyncpg is missing: " + install_command("postgres")
        ) from None


def is_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the server cannot be reached (gone, starting, recovering)."""
    return isinstance(exc, (OSError, asyncio.TimeoutError, TimeoutError)) or type(exc).__name__ in (
        "CannotConnectNowError",
        "ClientCannotConnectError",
        "ConnectionDoesNotExistError",
    )


def explain_error(url: PostgresURL, exc: BaseException) -> PostgresError:
    """A driver or network error as one line with the fix."""
    name = type(exc).__name__
    where = f"{url.masked}:"
    if name == "InvalidPasswordError":
        return PostgresError(f"{where} wrong password for role {url.user!r}; fix the URL")
    if name == "InvalidAuthorizationSpecificationError":
        return PostgresError(f"{where} role {url.user!r} may not log in ({exc}); fix the URL")
    if name == "InvalidCatalogNameError":
        return PostgresError(
            f"{where} database {url.database!r} does not exist; name one that does"
        )
    if is_unreachable(exc):
        detail = str(exc) or name
        return PostgresError(
            f"{where} the server is unreachable ({detail}); start it or fix host and port"
        )
    return PostgresError(f"{where} {name}: {exc}".splitlines()[0])


async def open_connection(url: PostgresURL) -> Any:
    return await _driver(url).connect(
        host=url.host,
        port=url.port,
        user=url.user,
        password=url.password or None,
        database=url.database,
        timeout=10,
        ssl=False if url.host in ("127.0.0.1", "localhost", "::1") else "prefer",
    )


def with_connection(url: PostgresURL, work: Callable[[Any], Coroutine[Any, Any, _T]]) -> _T:
    """Run ``work(connection)`` on a connection of its own to ``url``; errors explained."""

    async def go() -> _T:
        conn = await open_connection(url)
        try:
            return await work(conn)
        finally:
            await conn.close(timeout=5)

    try:
        return run_coroutine(go())
    except PostgresError:
        raise
    except Exception as exc:
        raise explain_error(url, exc) from None


def check_server(url: str | PostgresURL) -> PostgresURL:
    """Connect, and make sure the role may create databases; return the parsed URL."""
    parsed = PostgresURL.parse(url)

    async def work(conn: Any) -> tuple[bool, bool]:
        row = await conn.fetchrow(
            "SELECT rolsuper, rolcreatedb FROM pg_roles WHERE rolname = current_user"
        )
        return bool(row["rolsuper"]), bool(row["rolcreatedb"])

    superuser, createdb = with_connection(parsed, work)
    if not (superuser or createdb):
        raise PostgresError(
            f"{parsed.masked}: role {parsed.user!r} may not create databases; "
            f"ALTER ROLE {quote_identifier(parsed.user)} CREATEDB, or use a role that may"
        )
    return parsed


# -- registry rows ---------------------------------------------------------------------------


def read_kv_rows(url: str | PostgresURL, table: str) -> list[tuple[str, str]]:
    """Every unexpired ``(key, value)`` of a ``kv_postgres`` table, sorted by key.

    A table that does not exist yet (no stack has run on the database) reads as empty,
    like a store whose ``kvstore.db`` was never written.
    """
    parsed = PostgresURL.parse(url)

    async def work(conn: Any) -> list[tuple[str, str]]:
        if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", _table(table)):
            return []
        rows = await conn.fetch(
            f"SELECT key, value FROM {_table(table)} "
            "WHERE expiration IS NULL OR expiration > NOW() ORDER BY key"
        )
        return [(str(r["key"]), str(r["value"])) for r in rows]

    return with_connection(parsed, work)


def write_kv_rows(
    url: str | PostgresURL,
    table: str,
    rows: Iterable[tuple[str, str]],
    *,
    flavor: Flavor = LLAMA_STACK,
    delete: Iterable[str] = (),
) -> None:
    """Upsert ``rows`` (and delete the ``delete`` keys) in one transaction.

    The table is created as ``flavor``'s stack would create it, so a stack started later
    finds it (its ``CREATE TABLE IF NOT EXISTS`` is then a no-op).
    """
    parsed = PostgresURL.parse(url)
    rows, delete = list(rows), list(delete)

    async def work(conn: Any) -> None:
        async with conn.transaction():
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {_table(table)} (key TEXT PRIMARY KEY, value TEXT, "
                f"expiration {flavor.postgres_kv_expiration})"
            )
            if delete:
                await conn.execute(f"DELETE FROM {_table(table)} WHERE key = ANY($1)", delete)
            await conn.executemany(
                f"INSERT INTO {_table(table)} (key, value, expiration) VALUES ($1, $2, NULL) "
                "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expiration = NULL",
                rows,
            )

    with_connection(parsed, work)
