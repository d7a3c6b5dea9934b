"""Conversation history: SQLite (WAL) on disk, or in memory for one-shot use and tests."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Protocol

import aiosqlite

from bot.types import ConversationKey
from model.engine import ChatMessage

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    platform TEXT NOT NULL,
    channel TEXT NOT NULL,
    thread TEXT NOT NULL DEFAULT '',
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages (platform, channel, thread, id);
PRAGMA user_version = 1;
"""


class HistoryStoreError(RuntimeError):
    """The history database cannot be opened; the message says which file and why."""


class HistoryStore(Protocol):
    """Where conversation turns are kept between messages."""

    async def append(self, key: ConversationKey, message: ChatMessage) -> None:
        """Add one turn at the end of the conversation."""

    async def history(self, key: ConversationKey, limit: int) -> list[ChatMessage]:
        """The newest ``limit`` turns, oldest first."""

    async def reset(self, key: ConversationKey) -> int:
        """Forget the conversation; return how many turns were removed."""

    async def close(self) -> None:
        """Flush and release the store."""


class SQLiteHistoryStore:
    """History in one SQLite file in WAL mode, surviving restarts."""

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._db = connection

    @classmethod
    async def open(cls, path: Path) -> SQLiteHistoryStore:
        """Open (creating if needed) the history database at ``path``; ``HistoryStoreError`` says why not."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            connection = await aiosqlite.connect(path)
        except (OSError, sqlite3.Error) as error:
            raise HistoryStoreError(f"Cannot open the history database {path}: {error}") from None
        try:
            await connection.execute("PRAGMA journal_mode=WAL")
            await connection.execute("PRAGMA synchronous=NORMAL")
            await connection.executescript(_SCHEMA)
            await connection.commit()
        except sqlite3.Error as error:
            await connection.close()
            raise HistoryStoreError(f"Cannot open the history database {path}: {error}") from None
        return cls(connection)

    async def append(self, key: ConversationKey, message: ChatMessage) -> None:
        await self._db.execute(
            "INSERT INTO messages (platform, channel, thread, role, content, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (*_columns(key), message.role, message.content, time.time()),
        )
        await self._db.commit()

    async def history(self, key: ConversationKey, limit: int) -> list[ChatMessage]:
        cursor = await self._db.execute(
            "SELECT role, content FROM messages WHERE platform = ? AND channel = ? AND thread = ? "
            "ORDER BY id DESC LIMIT ?",
            (*_columns(key), limit),
        )
        rows = await cursor.fetchall()
        return [ChatMessage(role, content) for role, content in reversed(list(rows))]

    async def reset(self, key: ConversationKey) -> int:
        cursor = await self._db.execute(
            "DELETE FROM messages WHERE platform = ? AND channel = ? AND thread = ?", _columns(key)
        )
        await self._db.commit()
        return cursor.rowcount

    async def close(self) -> None:
        await self._db.close()


class MemoryHistoryStore:
    """History kept in a dict: for `bot ask` and for tests."""

    def __init__(self) -> None:
        self._turns: dict[ConversationKey, list[ChatMessage]] = {}

    async def append(self, key: ConversationKey, message: ChatMessage) -> None:
        self._turns.setdefault(key, []).append(message)

    async def history(self, key: ConversationKey, limit: int) -> list[ChatMessage]:
        return list(self._turns.get(key, [])[-limit:])

    async def reset(self, key: ConversationKey) -> int:
        return len(self._turns.pop(key, []))

    async def close(self) -> None:
        self._turns.clear()


def _columns(key: ConversationKey) -> tuple[str, str, str]:
    return key.platform, key.channel, key.thread or ""
