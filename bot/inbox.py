"""The inbox: every accepted message is recorded before the platform is told it arrived.

A row per message (platform, conversation, the platform's message id, state) lives in
the history database.  ``Core.submit`` records a message synchronously, before it
returns, so an adapter acknowledges only what is on disk; a crash or ``kill -9`` then
loses nothing: at the next start the messages still waiting or half-answered are
answered (or, when too old, told to ask again).  The same rows answer each platform
message once, however often the platform delivers it, across restarts too.

SQLite through the standard library, synchronously: one insert in WAL mode takes well
under a millisecond, and doing it inside ``submit`` keeps ``submit`` free of awaits
(its ordering guarantee depends on that).

``Inbox`` is what the core needs of any implementation: ``SQLiteInbox`` here (one
process), ``bot.pg_inbox.PostgresInbox`` for several processes sharing one PostgreSQL.
Every implementation raises ``InboxError`` when its database fails, so the core catches
one error whatever the backend.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from bot.types import ConversationKey, Identity, Incoming

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    platform TEXT NOT NULL,
    channel TEXT NOT NULL,
    thread TEXT NOT NULL DEFAULT '',
    message_id TEXT,
    reply_to TEXT,
    author TEXT NOT NULL,
    author_name TEXT NOT NULL DEFAULT '',
    roles TEXT NOT NULL DEFAULT '',
    text TEXT NOT NULL DEFAULT '',
    command TEXT,
    state TEXT NOT NULL,
    received_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS inbox_by_message ON inbox (platform, channel, message_id)
    WHERE message_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS inbox_unfinished ON inbox (platform, state) WHERE state != 'done';
CREATE INDEX IF NOT EXISTS inbox_by_age ON inbox (state, updated_at);
"""
# A finished row only de-duplicates: platforms redeliver within minutes, so a day is plenty.
DONE_KEPT_S = 24 * 3600.0
# A message never finished (its platform no longer configured, say) is kept this long, then forgotten.
UNFINISHED_KEPT_S = 7 * 24 * 3600.0
# Old finished rows are deleted at open and after every this many accepted messages.
FORGET_EVERY = 1000


class State(StrEnum):
    """Where an accepted message stands."""

    WAITING = "waiting"  # accepted, not answered yet (perhaps half-answered when the bot stopped)
    DONE = "done"  # answered, or told why not: nothing left to do


@dataclass(frozen=True)
class Unfinished:
    """A message accepted by an earlier run of the bot and never answered."""

    id: int
    message: Incoming
    reply_to: str | None
    received_at: float


class InboxError(RuntimeError):
    """The inbox's database failed; the message says how (never a password)."""


class Inbox(Protocol):
    """Where accepted messages are recorded; ``accept`` and ``done`` are synchronous so ``Core.submit`` never awaits."""

    def accept(self, message: Incoming, *, reply_to: str | None = None, answer: bool = True) -> int | None:
        """Record ``message``; return its row id, or ``None`` if the same platform message was recorded before."""

    def done(self, row: int) -> None:
        """The message is answered, or its author told why not."""

    def unfinished(self, platform: str) -> list[Unfinished]:
        """The platform's messages accepted earlier (by a run no longer alive) and never finished, oldest first."""

    def forget_done(self) -> int:
        """Delete old finished (and very old unfinished) rows; return how many."""

    async def turn(self, key: ConversationKey, row: int | None) -> None:
        """Return once every earlier message of ``key`` recorded by another live bot process is done."""

    async def aclose(self) -> None:
        """Stop any background work and release the database."""


class SQLiteInbox:
    """Accepted messages, recorded synchronously in SQLite (WAL): one bot process per database."""

    def __init__(self, connection: sqlite3.Connection, clock: Callable[[], float] = time.time) -> None:
        self._db = connection
        self._clock = clock
        self._accepted = 0

    @classmethod
    def open(cls, path: Path | str, clock: Callable[[], float] = time.time) -> SQLiteInbox:
        """Open (creating if needed) the inbox in the database at ``path`` (``":memory:"`` for a throwaway one).

        ``InboxError`` says why it cannot be opened.
        """
        try:
            return cls._open(path, clock)
        except (OSError, sqlite3.Error) as error:
            raise InboxError(f"Cannot open the inbox in {path}: {error}") from None

    @classmethod
    def _open(cls, path: Path | str, clock: Callable[[], float]) -> SQLiteInbox:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # The loop thread writes; other threads never touch it, so sharing the check is not needed.
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL survives a killed process (only an OS crash may lose the last commits).
        connection.execute("PRAGMA synchronous=NORMAL")
        # Short: the loop waits meanwhile; a write that still fails is logged and the message answered anyway.
        connection.execute("PRAGMA busy_timeout=1000")
        connection.executescript(_SCHEMA)
        columns = {row[1] for row in connection.execute("PRAGMA table_info(inbox)")}
        if "author_name" not in columns:  # an inbox of an earlier version: its rows keep no names
            connection.execute("ALTER TABLE inbox ADD COLUMN author_name TEXT NOT NULL DEFAULT ''")
        inbox = cls(connection, clock)
        inbox.forget_done()
        return inbox

    def accept(self, message: Incoming, *, reply_to: str | None = None, answer: bool = True) -> int | None:
        """Record ``message``; return its row id, or ``None`` if the same platform message was recorded before.

        ``answer=False`` records a message answered at once (a command, a refusal): it only de-duplicates,
        and its text is not kept.
        """
        now = self._clock()
        self._accepted += 1
        if self._accepted % FORGET_EVERY == 0:
            self.forget_done()
        state = State.WAITING if answer else State.DONE
        try:
            cursor = self._db.execute(
                "INSERT INTO inbox (platform, channel, thread, message_id, reply_to, author, author_name, roles, text,"
                " command, state, received_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*row_values(message, reply_to, answer=answer), state.value, now, now),
            )
        except sqlite3.IntegrityError:
            return None  # the unique index: this platform message is already recorded
        except sqlite3.Error as error:
            raise InboxError(f"Cannot record a message in the inbox: {error}") from None
        return cursor.lastrowid

    def done(self, row: int) -> None:
        """The message is answered, or its author told why not; its text is forgotten (it served only to answer)."""
        try:
            self._db.execute(
                "UPDATE inbox SET state = ?, text = '', updated_at = ? WHERE id = ?",
                (State.DONE.value, self._clock(), row),
            )
        except sqlite3.Error as error:
            raise InboxError(f"Cannot mark message {row} answered in the inbox: {error}") from None

    def unfinished(self, platform: str) -> list[Unfinished]:
        """The platform's messages an earlier run accepted but never finished, oldest first."""
        try:
            rows = self._db.execute(
                "SELECT id, channel, thread, message_id, reply_to, author, author_name, roles, text, command,"
                " received_at FROM inbox WHERE platform = ? AND state != 'done' ORDER BY id",
                (platform,),
            ).fetchall()
        except sqlite3.Error as error:
            raise InboxError(f"Cannot read the unfinished messages from the inbox: {error}") from None
        return [unfinished_row(platform, *row) for row in rows]

    def forget_done(self) -> int:
        """Delete finished rows older than a day and unfinished ones older than a week; return how many."""
        now = self._clock()
        try:
            cursor = self._db.execute(
                "DELETE FROM inbox WHERE (state = 'done' AND updated_at < ?) OR (state != 'done' AND updated_at < ?)",
                (now - DONE_KEPT_S, now - UNFINISHED_KEPT_S),
            )
        except sqlite3.Error as error:
            raise InboxError(f"Cannot forget old messages in the inbox: {error}") from None
        return cursor.rowcount

    async def turn(self, key: ConversationKey, row: int | None) -> None:
        """At once: one process owns a SQLite inbox, and it orders its own conversations."""

    def close(self) -> None:
        """Release the database."""
        self._db.close()

    async def aclose(self) -> None:
        """Release the database (the same as ``close``, for callers that treat every inbox alike)."""
        self.close()


def row_values(message: Incoming, reply_to: str | None, *, answer: bool) -> tuple[str | None, ...]:
    """An inbox row's columns from platform to command, as both inboxes write them (text only to answer it)."""
    who, command = message.author, message.command
    roles = ",".join(sorted(who.role_ids))
    text = message.text if answer else ""
    return (*key_columns(message.key), message.message_id, reply_to, who.user_id, who.name, roles, text, command)


def key_columns(key: ConversationKey) -> tuple[str, str, str]:
    """The (platform, channel, thread) columns of a conversation; no thread is stored as ''."""
    return key.platform, key.channel, key.thread or ""


def unfinished_row(
    platform: str,
    row: int,
    channel: str,
    thread: str,
    message_id: str | None,
    reply_to: str | None,
    author: str,
    author_name: str,
    roles: str,
    text: str,
    command: str | None,
    received_at: float,
) -> Unfinished:
    """An inbox row (its columns in the order the inboxes select them) as an ``Unfinished`` message."""
    identity = Identity(platform, author, frozenset(role for role in roles.split(",") if role), author_name)
    key = ConversationKey(platform, channel, thread or None)
    message = Incoming(key, identity, text, command=command, message_id=message_id)
    return Unfinished(row, message, reply_to, received_at)


def shared_turn(inbox: Inbox, limit_s: float) -> Callable[[ConversationKey, int | None], Awaitable[None]]:
    """``inbox.turn`` for the conversation manager, waiting at most ``limit_s`` (a reply's deadline).

    A database that fails there, or a wait past the limit (another process stuck on its message), is
    logged and the reply goes on: answering out of order beats not answering.
    """

    async def turn(key: ConversationKey, row: int | None) -> None:
        try:
            async with asyncio.timeout(limit_s):
                await inbox.turn(key, row)
        except InboxError as error:
            log.error("Could not wait for earlier messages of %s in other bot processes: %s", key, error)
        except TimeoutError:
            log.warning("Earlier messages of %s in other bot processes took over %.0f s; answering now", key, limit_s)

    return turn
