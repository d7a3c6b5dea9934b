"""Conversation history: SQLite (WAL) on disk, or in memory for one-shot use and tests.

The SQLite store keeps each conversation bounded (``Retention``): at most ``max_turns`` turns per
conversation and none older than ``max_age_days``. Retention runs when the store opens, on every append
(that conversation's turn limit, and the age limit at most once an hour) and on demand (``prune``).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiosqlite

from bot.channel_store import CHANNEL_TABLES, ChannelData, Feedback
from bot.threads import THREAD_TABLES, MemoryThreadMap, SQLiteThreadMap, ThreadMap
from bot.types import ConversationKey
from model.engine import ChatMessage

log = logging.getLogger(__name__)

SCHEMA_VERSION = 4
AGE_PRUNE_INTERVAL_S = 3600.0
_DAY_S = 86400.0
_KEY = "platform = :platform AND channel = :channel AND thread = :thread"

# Other parts of the bot keep their own tables in this file (the inbox): only `messages` is ours.
_MESSAGES = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    platform TEXT NOT NULL,
    channel TEXT NOT NULL,
    thread TEXT NOT NULL DEFAULT '',
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content TEXT NOT NULL,
    created_at REAL NOT NULL,
    interrupted INTEGER NOT NULL DEFAULT 0 CHECK (interrupted IN (0, 1)),
    author TEXT,
    author_id TEXT
)
"""
_ADD_INTERRUPTED = (
    "ALTER TABLE messages ADD COLUMN interrupted INTEGER NOT NULL DEFAULT 0 CHECK (interrupted IN (0, 1))"
)
_ADD_AUTHOR = ("ALTER TABLE messages ADD COLUMN author TEXT", "ALTER TABLE messages ADD COLUMN author_id TEXT")
_INDEXES = (
    "CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages (platform, channel, thread, id)",
    "CREATE INDEX IF NOT EXISTS messages_by_age ON messages (created_at)",
)
# The turns beyond the newest :max_turns of their conversation.
_OVER_TURN_LIMIT = (
    "id IN (SELECT id FROM (SELECT id, ROW_NUMBER() OVER "
    "(PARTITION BY platform, channel, thread ORDER BY id DESC) AS newer FROM messages) WHERE newer > :max_turns)"
)
_TOO_OLD = "created_at < :cutoff"


def retention_filter(
    retention: Retention, now: float, *, over_turn_limit: str, too_old: str
) -> tuple[str, dict[str, Any]] | None:
    """The WHERE clause and its parameters selecting the turns ``retention`` drops at ``now``; None: keep all.

    ``over_turn_limit`` and ``too_old`` are the two conditions in the caller's SQL dialect, reading the parameters
    ``max_turns`` and ``cutoff``.
    """
    conditions: list[str] = []
    parameters: dict[str, Any] = {}
    if retention.max_turns is not None:
        conditions.append(over_turn_limit)
        parameters["max_turns"] = retention.max_turns
    cutoff = retention.cutoff(now)
    if cutoff is not None:
        conditions.append(too_old)
        parameters["cutoff"] = cutoff
    if not conditions:
        return None
    return " OR ".join(f"({condition})" for condition in conditions), parameters


class HistoryStoreError(RuntimeError):
    """The history database cannot be opened; the message says which file and why."""


@dataclass(frozen=True)
class Retention:
    """How much history is kept: ``None`` leaves that bound off."""

    max_turns: int | None = None
    max_age_days: float | None = None

    def __post_init__(self) -> None:
        if self.max_turns is not None and self.max_turns < 1:
            raise ValueError(f"max_turns must be at least 1, not {self.max_turns}")
        if self.max_age_days is not None and self.max_age_days <= 0:
            raise ValueError(f"max_age_days must be positive, not {self.max_age_days}")

    def cutoff(self, now: float) -> float | None:
        """Turns created before this time (seconds since the epoch) are too old; ``None``: no age limit."""
        return None if self.max_age_days is None else now - self.max_age_days * _DAY_S


@dataclass(frozen=True)
class StoredTurn:
    """One stored turn as an admin sees it: ``created_at`` in seconds since the epoch (UTC)."""

    role: str
    content: str
    created_at: float
    interrupted: bool


@dataclass(frozen=True)
class ConversationSummary:
    """One stored conversation: how many turns it keeps and when the newest was written."""

    key: ConversationKey
    turns: int
    last_activity: float


class HistoryStore(Protocol):
    """Where conversation turns are kept between messages, with each channel's persona and feedback."""

    async def append(self, key: ConversationKey, message: ChatMessage, *, interrupted: bool = False) -> None:
        """Add one turn at the end of the conversation; ``interrupted``: a reply cut short, not complete."""

    async def history(self, key: ConversationKey, limit: int) -> list[ChatMessage]:
        """The newest ``limit`` turns, oldest first (interrupted ones too: users saw them)."""

    async def reset(self, key: ConversationKey) -> int:
        """Forget the conversation; return how many turns were removed."""

    async def persona(self, key: ConversationKey) -> str | None:
        """The system prompt set for ``key``'s channel (its threads included), or ``None`` for the default."""

    async def set_persona(self, key: ConversationKey, prompt: str | None, set_by: str) -> None:
        """Set (``None``: remove) the system prompt of ``key``'s channel."""

    async def record_feedback(self, key: ConversationKey, message_id: str, user_id: str, *, helpful: bool) -> None:
        """Record one person's rating of a reply (a second click replaces their first)."""

    async def feedback(self, key: ConversationKey) -> Feedback:
        """The ratings of replies in ``key``'s channel (its threads included)."""

    @property
    def threads(self) -> ThreadMap:
        """The platform threads the bot follows, kept with the history (shared by the processes sharing it)."""

    async def close(self) -> None:
        """Flush and release the store."""


class SQLiteHistoryStore:
    """History in one SQLite file in WAL mode, surviving restarts, bounded by a ``Retention``."""

    def __init__(
        self, connection: aiosqlite.Connection, retention: Retention, clock: Callable[[], float] = time.time
    ) -> None:
        """Use an open, migrated connection in autocommit mode; prefer ``open``."""
        self._db = connection
        self.retention = retention
        self._clock = clock
        self._next_age_prune = clock()  # the first append prunes by age unless open already did
        self._channels = ChannelData(connection, clock)
        self._threads = SQLiteThreadMap(connection, clock)

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        retention: Retention | None = None,
        clock: Callable[[], float] = time.time,
        prune: bool = True,
    ) -> SQLiteHistoryStore:
        """Open (creating or migrating if needed) the history database at ``path``; ``HistoryStoreError`` says why not.

        ``clock`` gives the time in seconds since the epoch (tests pass their own); with ``prune`` the
        retention is applied at once.
        """
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit: every write below opens its own explicit transaction.
            connection = await aiosqlite.connect(path, isolation_level=None)
        except (OSError, sqlite3.Error) as error:
            raise HistoryStoreError(f"Cannot open the history database {path}: {error}") from None
        store = cls(connection, retention or Retention(), clock)
        try:
            await connection.execute("PRAGMA journal_mode=WAL")
            await connection.execute("PRAGMA synchronous=NORMAL")
            await store._migrate(path)
            if prune:
                removed = await store.prune()
                if removed:
                    log.info("History retention removed %d turns", removed)
        except HistoryStoreError:
            await connection.close()
            raise
        except sqlite3.Error as error:
            await connection.close()
            raise HistoryStoreError(f"Cannot open the history database {path}: {error}") from None
        return store

    async def _migrate(self, path: Path) -> None:
        async with self._transaction():
            version = await self._scalar("PRAGMA user_version")
            if version > SCHEMA_VERSION:
                raise HistoryStoreError(
                    f"The history database {path} has schema version {version}, newer than this bot's "
                    f"{SCHEMA_VERSION}: upgrade the bot or use another data directory"
                )
            if version == SCHEMA_VERSION:
                return
            await self._db.execute(_MESSAGES)
            columns = {row[1] for row in await self._db.execute_fetchall("PRAGMA table_info(messages)")}
            if "interrupted" not in columns:  # version 1: every stored reply was complete
                await self._db.execute(_ADD_INTERRUPTED)
            if "author" not in columns:  # versions 1-2 kept no authors: those turns stay unnamed
                for column in _ADD_AUTHOR:
                    await self._db.execute(column)
            for table in (*CHANNEL_TABLES, *THREAD_TABLES):  # version 3 had no followed threads
                await self._db.execute(table)
            for index in _INDEXES:
                await self._db.execute(index)
            await self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    async def append(self, key: ConversationKey, message: ChatMessage, *, interrupted: bool = False) -> None:
        """Add one turn, then drop this conversation's turns beyond the limit (and, hourly, the too old)."""
        now = self._clock()
        # One statement at a time, each its own transaction: a transaction spanning awaits would hold the
        # write lock while the event loop runs, and the inbox (bot/inbox.py) writes to this file from the
        # loop itself, synchronously: it would wait on a lock that only the loop can release.  Trimming is
        # idempotent, so an insert without its trim (a crash in between) is trimmed by the next append.
        await self._db.execute(
            "INSERT INTO messages (platform, channel, thread, role, content, created_at, interrupted, author, "
            "author_id) VALUES (:platform, :channel, :thread, :role, :content, :now, :interrupted, :author, :speaker)",
            {**_columns(key), "role": message.role, "content": message.content}
            | {"now": now, "interrupted": int(interrupted), "author": message.name, "speaker": message.speaker},
        )
        if self.retention.max_turns is not None:
            await self._db.execute(
                f"DELETE FROM messages WHERE {_KEY} AND id <= (SELECT id FROM messages WHERE {_KEY} "
                "ORDER BY id DESC LIMIT 1 OFFSET :max_turns)",
                {**_columns(key), "max_turns": self.retention.max_turns},
            )
        cutoff = self.retention.cutoff(now)
        if cutoff is not None and now >= self._next_age_prune:
            await self._db.execute(f"DELETE FROM messages WHERE {_TOO_OLD}", {"cutoff": cutoff})
            self._next_age_prune = now + AGE_PRUNE_INTERVAL_S

    async def history(self, key: ConversationKey, limit: int) -> list[ChatMessage]:
        """The newest ``limit`` turns, oldest first."""
        rows = await self._db.execute_fetchall(
            f"SELECT role, content, author, author_id FROM messages WHERE {_KEY} ORDER BY id DESC LIMIT :limit",
            {**_columns(key), "limit": limit},
        )
        return [ChatMessage(*row) for row in reversed(list(rows))]

    async def reset(self, key: ConversationKey) -> int:
        """Forget the conversation; return how many turns were removed."""
        cursor = await self._db.execute(f"DELETE FROM messages WHERE {_KEY}", _columns(key))
        return int(cursor.rowcount)

    async def persona(self, key: ConversationKey) -> str | None:
        """The system prompt set for ``key``'s channel, or ``None``."""
        return await self._channels.persona(key)

    async def set_persona(self, key: ConversationKey, prompt: str | None, set_by: str) -> None:
        """Set (``None``: remove) the system prompt of ``key``'s channel."""
        await self._channels.set_persona(key, prompt, set_by)

    async def record_feedback(self, key: ConversationKey, message_id: str, user_id: str, *, helpful: bool) -> None:
        """Record one person's rating of a reply (a second click replaces their first)."""
        await self._channels.record_feedback(key, message_id, user_id, helpful=helpful)

    async def feedback(self, key: ConversationKey) -> Feedback:
        """The ratings of replies in ``key``'s channel (its threads included)."""
        return await self._channels.feedback(key)

    @property
    def threads(self) -> SQLiteThreadMap:
        """The followed threads, in this file."""
        return self._threads

    async def prune(self, *, dry_run: bool = False) -> int:
        """Apply the retention to every conversation now; return how many turns went (or would go).

        Also forgets the threads not followed for ``bot.threads.FOLLOW_DAYS`` (not counted).
        """
        now = self._clock()
        if not dry_run:
            await self._threads.prune()
            if self.retention.cutoff(now) is not None:
                self._next_age_prune = now + AGE_PRUNE_INTERVAL_S
        dropped = retention_filter(self.retention, now, over_turn_limit=_OVER_TURN_LIMIT, too_old=_TOO_OLD)
        if dropped is None:
            return 0
        where, parameters = dropped
        if dry_run:
            return await self._scalar(f"SELECT COUNT(*) FROM messages WHERE {where}", parameters)
        cursor = await self._db.execute(f"DELETE FROM messages WHERE {where}", parameters)  # one statement: see append
        return int(cursor.rowcount)

    async def conversations(self) -> list[ConversationSummary]:
        """Every stored conversation with its turn count, the most recently active first."""
        rows = await self._db.execute_fetchall(
            "SELECT platform, channel, thread, COUNT(*), MAX(created_at) FROM messages "
            "GROUP BY platform, channel, thread ORDER BY MAX(created_at) DESC"
        )
        return [
            ConversationSummary(ConversationKey(platform, channel, thread or None), count, last)
            for platform, channel, thread, count, last in rows
        ]

    async def count(self, key: ConversationKey) -> int:
        """How many turns the conversation keeps (0 for one never seen)."""
        return await self._scalar(f"SELECT COUNT(*) FROM messages WHERE {_KEY}", _columns(key))

    async def turns(self, key: ConversationKey) -> AsyncIterator[StoredTurn]:
        """Every stored turn of the conversation, oldest first, read as it is consumed."""
        async with self._db.execute(
            f"SELECT role, content, created_at, interrupted FROM messages WHERE {_KEY} ORDER BY id", _columns(key)
        ) as cursor:
            async for role, content, created_at, interrupted in cursor:
                yield StoredTurn(role, content, created_at, bool(interrupted))

    async def close(self) -> None:
        """Release the database file."""
        await self._db.close()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[None]:
        # IMMEDIATE takes the write lock up front, so two connections (the bot and `bot history prune`)
        # wait on the busy timeout rather than failing half-way through.
        await self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if self._db.in_transaction:  # SQLite may have rolled back already
                await self._db.execute("ROLLBACK")
            raise
        await self._db.execute("COMMIT")

    async def _scalar(self, sql: str, parameters: dict[str, Any] | None = None) -> int:
        rows = list(await self._db.execute_fetchall(sql, parameters or {}))
        return int(rows[0][0])


class MemoryHistoryStore:
    """History kept in a dict: for `bot ask` and for tests."""

    def __init__(self) -> None:
        self._turns: dict[ConversationKey, list[ChatMessage]] = {}
        self._personas: dict[tuple[str, str], str] = {}
        self._ratings: dict[tuple[str, str, str, str], bool] = {}
        self._threads = MemoryThreadMap()

    async def append(self, key: ConversationKey, message: ChatMessage, *, interrupted: bool = False) -> None:
        """Add one turn; whether it was interrupted is not kept, as nothing reads it back from memory."""
        self._turns.setdefault(key, []).append(message)

    async def history(self, key: ConversationKey, limit: int) -> list[ChatMessage]:
        """The newest ``limit`` turns, oldest first."""
        return list(self._turns.get(key, [])[-limit:])

    async def reset(self, key: ConversationKey) -> int:
        """Forget the conversation; return how many turns were removed."""
        return len(self._turns.pop(key, []))

    async def persona(self, key: ConversationKey) -> str | None:
        """The system prompt set for ``key``'s channel, or ``None``."""
        return self._personas.get((key.platform, key.channel))

    async def set_persona(self, key: ConversationKey, prompt: str | None, set_by: str) -> None:
        """Set (``None``: remove) the system prompt of ``key``'s channel."""
        if prompt is None:
            self._personas.pop((key.platform, key.channel), None)
        else:
            self._personas[key.platform, key.channel] = prompt

    async def record_feedback(self, key: ConversationKey, message_id: str, user_id: str, *, helpful: bool) -> None:
        """Record one person's rating of a reply (a second click replaces their first)."""
        self._ratings[key.platform, key.channel, message_id, user_id] = helpful

    async def feedback(self, key: ConversationKey) -> Feedback:
        """The ratings of replies in ``key``'s channel."""
        ratings = [v for (p, c, _, _), v in self._ratings.items() if (p, c) == (key.platform, key.channel)]
        return Feedback(sum(ratings), len(ratings) - sum(ratings))

    @property
    def threads(self) -> MemoryThreadMap:
        """The followed threads, in memory (one process)."""
        return self._threads

    async def close(self) -> None:
        """Forget everything."""
        self._turns.clear()


def _columns(key: ConversationKey) -> dict[str, str]:
    return {"platform": key.platform, "channel": key.channel, "thread": key.thread or ""}
