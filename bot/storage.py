"""Where the history and the inbox live: SQLite in the data directory (the default) or a shared PostgreSQL.

``BOT_DATABASE_URL=postgresql://...`` picks PostgreSQL, which several bot processes can share;
without it everything stays in one SQLite file, for one process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

from bot.inbox import Inbox, InboxError, SQLiteInbox
from bot.pg_inbox import PostgresInbox
from bot.pg_store import PostgresHistoryStore
from bot.store import ConversationSummary, HistoryStore, HistoryStoreError, Retention, SQLiteHistoryStore, StoredTurn
from bot.types import ConversationKey

_SCHEMES = ("postgresql://", "postgres://")


class AdminHistoryStore(HistoryStore, Protocol):
    """A persistent history store with what ``bot history`` needs: both SQLite and PostgreSQL stores are one."""

    retention: Retention

    async def prune(self, *, dry_run: bool = False) -> int:
        """Apply the retention now; return how many turns went (or would go)."""

    async def conversations(self) -> list[ConversationSummary]:
        """Every stored conversation, the most recently active first."""

    async def count(self, key: ConversationKey) -> int:
        """How many turns the conversation keeps."""

    def turns(self, key: ConversationKey) -> AsyncIterator[StoredTurn]:
        """Every stored turn of the conversation, oldest first."""


def check_database_url(database_url: str) -> str:
    """``database_url`` if it is a PostgreSQL URL; ``ValueError`` (never showing it: it may hold a password) if not."""
    if not database_url.startswith(_SCHEMES):
        raise ValueError("BOT_DATABASE_URL must be a PostgreSQL URL: postgresql://user:password@host:5432/database")
    return database_url


async def open_history_store(
    database_url: str | None, sqlite_path: Path, retention: Retention, *, prune: bool = True
) -> AdminHistoryStore:
    """The history in PostgreSQL when ``database_url`` is set, else in SQLite at ``sqlite_path``.

    ``HistoryStoreError`` says why it cannot be opened (naming host:port/database, never the password).
    """
    if database_url is None:
        return await SQLiteHistoryStore.open(sqlite_path, retention=retention, prune=prune)
    try:
        url = check_database_url(database_url)
    except ValueError as error:
        raise HistoryStoreError(str(error)) from None
    return await PostgresHistoryStore.open(url, retention=retention, prune=prune)


async def open_inbox(database_url: str | None, sqlite_path: Path | str) -> Inbox:
    """The inbox in PostgreSQL when ``database_url`` is set (with its heartbeat), else in SQLite at ``sqlite_path``.

    Close it with ``await inbox.aclose()``.  ``InboxError`` says why it cannot be opened.
    """
    if database_url is None:
        return SQLiteInbox.open(sqlite_path)
    try:
        url = check_database_url(database_url)
    except ValueError as error:
        raise InboxError(str(error)) from None
    return await PostgresInbox.open(url)
