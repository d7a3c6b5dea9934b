"""PostgreSQL schema migrations: ``bot/migrations/postgresql/NNNN_name.sql``, applied in order, once.

Applied versions are kept in a ``schema_version`` table.  Every bot process runs ``migrate``
when it opens the database; a transaction-scoped advisory lock makes processes that start
together take turns, so each migration is applied exactly once (PostgreSQL's DDL is
transactional: a failed migration leaves nothing behind).  Also the connection helpers the
PostgreSQL parts share: a clear connection error that names host:port/database, never the
password.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow

# Advisory lock keys (two int4s): the first marks this bot's locks, the second what they guard.
LOCK_CLASS = 0x626F74  # "bot"
MIGRATION_LOCK = 1
CONNECT_TIMEOUT_S = 10
# Every connection fails rather than hangs: a half-open TCP connection is noticed within seconds (keepalives,
# tcp_user_timeout) and no statement runs longer than a few seconds (the inbox runs some on the event loop).
CONNECTION_OPTIONS: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 5000,
    # The server drops a vanished client's session (and its locks) within seconds too, not the OS's two hours.
    "options": "-c statement_timeout=5000 -c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2"
    " -c tcp_keepalives_count=3",
}
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class MigrationError(RuntimeError):
    """The database cannot be brought to this bot's schema; the message says why."""


@dataclass(frozen=True)
class Migration:
    """One versioned migration file."""

    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The migrations shipped with the bot, in version order."""
    found = []
    for entry in files("bot.migrations").joinpath("postgresql").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda migration: migration.version)


async def migrate(connection: psycopg.AsyncConnection[TupleRow]) -> list[int]:
    """Apply the migrations this database lacks; return their versions (empty: it was up to date)."""
    known = migrations()
    latest = known[-1].version if known else 0
    applied: list[int] = []
    async with connection.transaction():
        # A migration may take long, and so may the wait for another process's: not the connections' 5 s limit.
        await connection.execute("SET LOCAL statement_timeout = 0")
        await connection.execute("SET LOCAL lock_timeout = '120s'")
        # Held until the transaction ends: a second process starting now waits here, then finds nothing to do.
        await connection.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_CLASS, MIGRATION_LOCK))
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cursor = await connection.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version")
        row = await cursor.fetchone()
        current = int(row[0]) if row else 0
        if current > latest:
            raise MigrationError(
                f"The database has schema version {current}, newer than this bot's {latest}: upgrade the bot"
            )
        for migration in known:
            if migration.version > current:
                await connection.execute(migration.sql.encode())  # no parameters: several statements in one go
                await connection.execute(
                    "INSERT INTO schema_version (version, name) VALUES (%s, %s)", (migration.version, migration.name)
                )
                applied.append(migration.version)
    return applied


def describe(url: str) -> str:
    """``host:port/database`` of a PostgreSQL URL, for messages: never its user's password."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.Error:
        return "an unreadable PostgreSQL URL"
    return f"{parts.get('host', 'localhost')}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"


def connection_problem(url: str, error: BaseException) -> str:
    """A one-line explanation of a failed connection, naming the server, with any password removed."""
    detail = " ".join(str(error).split())
    password = _password(url)
    if password:
        detail = detail.replace(password, "***")
    return f"Cannot use the PostgreSQL database at {describe(url)}: {detail}"


async def connect(url: str, *, autocommit: bool = True) -> psycopg.AsyncConnection[TupleRow]:
    """An async connection; ``psycopg.Error`` (or ``ValueError`` for a malformed URL) if it cannot be made."""
    connection: psycopg.AsyncConnection[TupleRow] = await psycopg.AsyncConnection.connect(
        url, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT_S, **CONNECTION_OPTIONS
    )
    return connection


def _password(url: str) -> str | None:
    try:
        return conninfo_to_dict(url).get("password")  # type: ignore[return-value]
    except psycopg.Error:
        match = re.match(r"^[a-z]+://[^:/@]*:([^@]*)@", url)
        return match.group(1) if match else None
