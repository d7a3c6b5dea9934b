"""Conversation history, personas and feedback in PostgreSQL, shared by several bot processes.

The same meaning as ``bot.store.SQLiteHistoryStore`` (schema v4: authors, interrupted
turns, followed threads, retention by turns and by age), on psycopg 3's async connections from a
``psycopg_pool.AsyncConnectionPool``.  Unlike SQLite, an append and its trim share one
transaction: PostgreSQL locks rows, not the database, so nothing else waits on it.
The schema comes from the versioned migrations (``bot.pg_migrate``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from bot.channel_store import Feedback
from bot.pg_migrate import (
    CONNECT_TIMEOUT_S,
    CONNECTION_OPTIONS,
    MigrationError,
    connect,
    connection_problem,
    describe,
    migrate,
)
from bot.store import (
    AGE_PRUNE_INTERVAL_S,
    ConversationSummary,
    HistoryStoreError,
    Retention,
    StoredTurn,
    retention_filter,
)
from bot.threads import PRUNE_INTERVAL_S, ThreadMapError, conversation_of, stale_before
from bot.types import ConversationKey
from model.engine import ChatMessage

log = logging.getLogger(__name__)

# Enough for every conversation answering at once to write without waiting on each other for long.
POOL_SIZE = 8
_KEY = "platform = %(platform)s AND channel = %(channel)s AND thread = %(thread)s"
_CHANNEL = "platform = %(platform)s AND channel = %(channel)s"
_OVER_TURN_LIMIT = (
    "id IN (SELECT id FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY platform, channel, thread ORDER BY id DESC)"
    " AS newer FROM messages) AS ranked WHERE newer > %(max_turns)s)"
)
_TOO_OLD = "created_at < %(cutoff)s"
_Pool = AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]]


class PostgresHistoryStore:
    """History in PostgreSQL, bounded by a ``Retention``; open with ``open``."""

    def __init__(
        self,
        pool: _Pool,
        retention: Retention,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Use an open pool on a migrated database; prefer ``open``."""
        self._pool = pool
        self.retention = retention
        self._clock = clock
        self._next_age_prune = clock()
        self._threads = PostgresThreadMap(pool, clock)

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        retention: Retention | None = None,
        clock: Callable[[], float] = time.time,
        prune: bool = True,
    ) -> PostgresHistoryStore:
        """Connect, migrate if needed and apply the retention (with ``prune``); ``HistoryStoreError`` says why not."""
        await _migrated(url)
        pool: _Pool = AsyncConnectionPool(
            # Autocommit: a single statement needs no BEGIN/COMMIT round trips; the append opens its own transaction.
            url,
            min_size=1,
            max_size=POOL_SIZE,
            open=False,
            kwargs={"connect_timeout": CONNECT_TIMEOUT_S, "autocommit": True, **CONNECTION_OPTIONS},
            # A connection broken by a server restart is replaced before use, not failed in a reply.
            check=AsyncConnectionPool.check_connection,
        )
        try:
            await pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        except PoolTimeout:
            await pool.close()
            raise HistoryStoreError(f"Cannot connect to the PostgreSQL database at {describe(url)}") from None
        store = cls(pool, retention or Retention(), clock)
        if prune:
            try:
                removed = await store.prune()
            except psycopg.Error as error:
                await pool.close()
                raise HistoryStoreError(connection_problem(url, error)) from None
            if removed:
                log.info("History retention removed %d turns", removed)
        return store

    async def append(self, key: ConversationKey, message: ChatMessage, *, interrupted: bool = False) -> None:
        """Add one turn, then drop this conversation's turns beyond the limit (and, hourly, the too old)."""
        now = self._clock()
        async with self._pool.connection() as connection, connection.transaction():  # the turn with its trim
            await connection.execute(
                "INSERT INTO messages (platform, channel, thread, role, content, created_at, interrupted, author,"
                " author_id) VALUES (%(platform)s, %(channel)s, %(thread)s, %(role)s, %(content)s, %(now)s,"
                " %(interrupted)s, %(author)s, %(speaker)s)",
                {**_columns(key), "role": message.role, "content": message.content}
                | {"now": now, "interrupted": interrupted, "author": message.name, "speaker": message.speaker},
            )
            if self.retention.max_turns is not None:
                await connection.execute(
                    f"DELETE FROM messages WHERE {_KEY} AND id <= (SELECT id FROM messages WHERE {_KEY}"
                    " ORDER BY id DESC LIMIT 1 OFFSET %(max_turns)s)",
                    {**_columns(key), "max_turns": self.retention.max_turns},
                )
            cutoff = self.retention.cutoff(now)
            if cutoff is not None and now >= self._next_age_prune:
                await connection.execute(f"DELETE FROM messages WHERE {_TOO_OLD}", {"cutoff": cutoff})
                self._next_age_prune = now + AGE_PRUNE_INTERVAL_S

    async def history(self, key: ConversationKey, limit: int) -> list[ChatMessage]:
        """The newest ``limit`` turns, oldest first."""
        rows = await self._fetch(
            f"SELECT role, content, author, author_id FROM messages WHERE {_KEY} ORDER BY id DESC LIMIT %(limit)s",
            {**_columns(key), "limit": limit},
        )
        return [ChatMessage(*row) for row in reversed(rows)]

    async def reset(self, key: ConversationKey) -> int:
        """Forget the conversation; return how many turns were removed."""
        return await self._execute(f"DELETE FROM messages WHERE {_KEY}", _columns(key))

    async def persona(self, key: ConversationKey) -> str | None:
        """The system prompt set for ``key``'s channel, or ``None``."""
        rows = await self._fetch(f"SELECT prompt FROM personas WHERE {_CHANNEL}", _columns(key))
        return str(rows[0][0]) if rows else None

    async def set_persona(self, key: ConversationKey, prompt: str | None, set_by: str) -> None:
        """Set (``None``: remove) the system prompt of ``key``'s channel."""
        if prompt is None:
            await self._execute(f"DELETE FROM personas WHERE {_CHANNEL}", _columns(key))
            return
        await self._execute(
            "INSERT INTO personas (platform, channel, prompt, set_by, set_at) VALUES (%(platform)s, %(channel)s,"
            " %(prompt)s, %(set_by)s, %(now)s) ON CONFLICT (platform, channel) DO UPDATE SET prompt = EXCLUDED.prompt,"
            " set_by = EXCLUDED.set_by, set_at = EXCLUDED.set_at",
            {**_columns(key), "prompt": prompt, "set_by": set_by, "now": self._clock()},
        )

    async def record_feedback(self, key: ConversationKey, message_id: str, user_id: str, *, helpful: bool) -> None:
        """Record one person's rating of a reply (a second click replaces their first)."""
        await self._execute(
            "INSERT INTO feedback (platform, channel, thread, message_id, user_id, helpful, created_at) VALUES"
            " (%(platform)s, %(channel)s, %(thread)s, %(message_id)s, %(user_id)s, %(helpful)s, %(now)s)"
            " ON CONFLICT (platform, channel, message_id, user_id) DO UPDATE SET helpful = EXCLUDED.helpful,"
            " thread = EXCLUDED.thread, created_at = EXCLUDED.created_at",
            {**_columns(key), "message_id": message_id, "user_id": user_id, "helpful": helpful, "now": self._clock()},
        )

    async def feedback(self, key: ConversationKey) -> Feedback:
        """The ratings of replies in ``key``'s channel (its threads included)."""
        rows = await self._fetch(
            "SELECT COUNT(*) FILTER (WHERE helpful), COUNT(*) FILTER (WHERE NOT helpful) FROM feedback"
            f" WHERE {_CHANNEL}",
            _columns(key),
        )
        return Feedback(int(rows[0][0]), int(rows[0][1]))

    @property
    def threads(self) -> PostgresThreadMap:
        """The followed threads, in this database (shared by every bot process using it)."""
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
            rows = await self._fetch(f"SELECT COUNT(*) FROM messages WHERE {where}", parameters)
            return int(rows[0][0])
        return await self._execute(f"DELETE FROM messages WHERE {where}", parameters)

    async def conversations(self) -> list[ConversationSummary]:
        """Every stored conversation with its turn count, the most recently active first."""
        rows = await self._fetch(
            "SELECT platform, channel, thread, COUNT(*), MAX(created_at) FROM messages"
            " GROUP BY platform, channel, thread ORDER BY MAX(created_at) DESC",
            {},
        )
        return [
            ConversationSummary(ConversationKey(platform, channel, thread or None), int(count), last)
            for platform, channel, thread, count, last in rows
        ]

    async def count(self, key: ConversationKey) -> int:
        """How many turns the conversation keeps (0 for one never seen)."""
        rows = await self._fetch(f"SELECT COUNT(*) FROM messages WHERE {_KEY}", _columns(key))
        return int(rows[0][0])

    async def turns(self, key: ConversationKey) -> AsyncIterator[StoredTurn]:
        """Every stored turn of the conversation, oldest first, read as it is consumed (a server-side cursor)."""
        async with (
            self._pool.connection() as connection,
            connection.transaction(),  # a server-side cursor lives in a transaction
            connection.cursor(name="turns") as cursor,
        ):
            await cursor.execute(
                f"SELECT role, content, created_at, interrupted FROM messages WHERE {_KEY} ORDER BY id", _columns(key)
            )
            async for role, content, created_at, interrupted in cursor:
                yield StoredTurn(role, content, created_at, bool(interrupted))

    async def close(self) -> None:
        """Close every pooled connection."""
        await self._pool.close()

    async def _fetch(self, query: str, parameters: dict[str, Any]) -> list[TupleRow]:
        async with self._pool.connection() as connection:
            cursor = await connection.execute(query, parameters)
            return await cursor.fetchall()

    async def _execute(self, query: str, parameters: dict[str, Any]) -> int:
        async with self._pool.connection() as connection:
            cursor = await connection.execute(query, parameters)
            return cursor.rowcount


class PostgresThreadMap:
    """Followed threads (``bot.threads.ThreadMap``) in PostgreSQL: one row per thread, upserted."""

    def __init__(self, pool: _Pool, clock: Callable[[], float] = time.time) -> None:
        self._pool = pool
        self._clock = clock
        self._next_prune = clock() + PRUNE_INTERVAL_S  # opening the store prunes first

    async def follow(self, platform: str, channel: str, thread: str, key: ConversationKey) -> None:
        """Follow ``thread`` from now on, continuing ``key``; at most hourly, forget the stale threads."""
        now = self._clock()
        try:
            async with self._pool.connection() as connection:
                await connection.execute(
                    "INSERT INTO followed_threads (platform, channel, thread, conversation_channel,"
                    " conversation_thread, followed_at) VALUES (%s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (platform, channel, thread) DO UPDATE SET"
                    " conversation_channel = EXCLUDED.conversation_channel,"
                    " conversation_thread = EXCLUDED.conversation_thread, followed_at = EXCLUDED.followed_at",
                    (platform, channel, thread, key.channel, key.thread or "", now),
                )
            if now >= self._next_prune:
                await self.prune()
        except (psycopg.Error, PoolTimeout) as error:
            raise ThreadMapError(f"Cannot record a followed thread: {_one_line(error)}") from None

    async def followed(self, platform: str, channel: str, thread: str) -> ConversationKey | None:
        """The conversation ``thread`` continues, or ``None``."""
        try:
            async with self._pool.connection() as connection:
                cursor = await connection.execute(
                    "SELECT conversation_channel, conversation_thread FROM followed_threads"
                    " WHERE platform = %s AND channel = %s AND thread = %s",
                    (platform, channel, thread),
                )
                row = await cursor.fetchone()
        except (psycopg.Error, PoolTimeout) as error:
            raise ThreadMapError(f"Cannot read the followed threads: {_one_line(error)}") from None
        return None if row is None else conversation_of(platform, row[0], row[1])

    async def prune(self) -> int:
        """Forget the threads not followed for ``FOLLOW_DAYS``; return how many went."""
        now = self._clock()
        self._next_prune = now + PRUNE_INTERVAL_S
        async with self._pool.connection() as connection:
            cursor = await connection.execute(
                "DELETE FROM followed_threads WHERE followed_at < %s", (stale_before(now),)
            )
            return cursor.rowcount


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


async def _migrated(url: str) -> None:
    """Bring the database to this bot's schema, or raise ``HistoryStoreError`` naming the server (no password)."""
    try:
        connection = await connect(url)
    except (psycopg.Error, ValueError) as error:
        raise HistoryStoreError(connection_problem(url, error)) from None
    try:
        await migrate(connection)
    except MigrationError as error:
        raise HistoryStoreError(f"The PostgreSQL database at {describe(url)}: {error}") from None
    except psycopg.Error as error:
        raise HistoryStoreError(connection_problem(url, error)) from None
    finally:
        await connection.close()


def _columns(key: ConversationKey) -> dict[str, str]:
    return {"platform": key.platform, "channel": key.channel, "thread": key.thread or ""}
