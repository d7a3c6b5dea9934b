"""The threads the bot follows, kept with the history so that every bot process sharing it knows them.

A platform thread the bot answered in (a Slack thread of a mention, or of a ``/ask`` answer) goes on with one
conversation: its own, or the channel's for ``/ask``.  Several processes of one app each receive some of a
thread's messages, so the map lives in the history database (SQLite or PostgreSQL), not in one process.

Entries are bounded: a thread not followed again for ``FOLLOW_DAYS`` days is forgotten (its conversation is
then answered only when addressed again), pruned when the store opens, by ``prune`` and at most hourly on
``follow``.
"""

from __future__ import annotations

import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

import aiosqlite

from bot.types import ConversationKey

# A month without a message in it: the thread is over.  Long enough that nobody notices the bot forgetting it.
FOLLOW_DAYS = 30.0
PRUNE_INTERVAL_S = 3600.0
# The memory map's bound (`bot ask`, tests): the active threads of a busy workspace.
MEMORY_CAPACITY = 10_000
_DAY_S = 86400.0

THREAD_TABLES = (
    """CREATE TABLE IF NOT EXISTS followed_threads (
        platform TEXT NOT NULL,
        channel TEXT NOT NULL,
        thread TEXT NOT NULL,
        conversation_channel TEXT NOT NULL,
        conversation_thread TEXT NOT NULL DEFAULT '',
        followed_at REAL NOT NULL,
        PRIMARY KEY (platform, channel, thread)
    )""",
    "CREATE INDEX IF NOT EXISTS followed_threads_by_age ON followed_threads (followed_at)",
)


class ThreadMapError(RuntimeError):
    """The followed threads cannot be read or written now (the database is unreachable); the message says why."""


class ThreadMap(Protocol):
    """Which conversation each followed platform thread continues, shared by every process using the store."""

    async def follow(self, platform: str, channel: str, thread: str, key: ConversationKey) -> None:
        """Follow ``thread`` of ``channel`` from now on, continuing ``key`` (again: refreshes it, or moves it)."""

    async def followed(self, platform: str, channel: str, thread: str) -> ConversationKey | None:
        """The conversation a followed thread continues, or ``None`` if the bot does not follow it."""


def stale_before(now: float) -> float:
    """Threads followed last before this time (seconds since the epoch) are forgotten."""
    return now - FOLLOW_DAYS * _DAY_S


def conversation_of(platform: str, channel: str, thread: str) -> ConversationKey:
    """The stored conversation columns as a key (an empty thread: the channel's own conversation)."""
    return ConversationKey(platform, channel, thread or None)


class MemoryThreadMap:
    """Followed threads in a dict, the least recently followed forgotten beyond ``capacity``: one process only."""

    def __init__(self, capacity: int = MEMORY_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._threads: OrderedDict[tuple[str, str, str], ConversationKey] = OrderedDict()
        self._capacity = capacity

    async def follow(self, platform: str, channel: str, thread: str, key: ConversationKey) -> None:
        """Follow ``thread`` from now on, continuing ``key``."""
        self._threads[platform, channel, thread] = key
        self._threads.move_to_end((platform, channel, thread))
        if len(self._threads) > self._capacity:
            self._threads.popitem(last=False)

    async def followed(self, platform: str, channel: str, thread: str) -> ConversationKey | None:
        """The conversation ``thread`` continues, or ``None``."""
        return self._threads.get((platform, channel, thread))


class SQLiteThreadMap:
    """Followed threads in the history's SQLite file (its table made by the history store's migration)."""

    def __init__(self, connection: aiosqlite.Connection, clock: Callable[[], float] = time.time) -> None:
        self._db = connection
        self._clock = clock
        self._next_prune = clock() + PRUNE_INTERVAL_S  # opening the store prunes first

    async def follow(self, platform: str, channel: str, thread: str, key: ConversationKey) -> None:
        """Follow ``thread`` from now on, continuing ``key``; at most hourly, forget the stale threads."""
        now = self._clock()
        try:
            await self._db.execute(
                "INSERT INTO followed_threads (platform, channel, thread, conversation_channel, conversation_thread,"
                " followed_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (platform, channel, thread) DO UPDATE SET"
                " conversation_channel = excluded.conversation_channel,"
                " conversation_thread = excluded.conversation_thread, followed_at = excluded.followed_at",
                (platform, channel, thread, key.channel, key.thread or "", now),
            )
            if now >= self._next_prune:
                await self.prune()
        except sqlite3.Error as error:
            raise ThreadMapError(f"Cannot record a followed thread: {error}") from None

    async def followed(self, platform: str, channel: str, thread: str) -> ConversationKey | None:
        """The conversation ``thread`` continues, or ``None``."""
        try:
            rows = list(
                await self._db.execute_fetchall(
                    "SELECT conversation_channel, conversation_thread FROM followed_threads"
                    " WHERE platform = ? AND channel = ? AND thread = ?",
                    (platform, channel, thread),
                )
            )
        except sqlite3.Error as error:
            raise ThreadMapError(f"Cannot read the followed threads: {error}") from None
        return conversation_of(platform, rows[0][0], rows[0][1]) if rows else None

    async def prune(self) -> int:
        """Forget the threads not followed for ``FOLLOW_DAYS``; return how many went."""
        now = self._clock()
        self._next_prune = now + PRUNE_INTERVAL_S
        cursor = await self._db.execute("DELETE FROM followed_threads WHERE followed_at < ?", (stale_before(now),))
        return int(cursor.rowcount)
