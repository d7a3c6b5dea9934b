"""A channel's own data, kept with the history: its instructions (persona) and the feedback on the bot's replies.

Both belong to a channel with its threads, so they are keyed by (platform, channel) when read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import aiosqlite

from bot.types import ConversationKey

# A channel's own instructions (its system prompt) and the feedback on the bot's replies, kept with the history.
CHANNEL_TABLES = (
    """CREATE TABLE IF NOT EXISTS personas (
        platform TEXT NOT NULL,
        channel TEXT NOT NULL,
        prompt TEXT NOT NULL,
        set_by TEXT NOT NULL,
        set_at REAL NOT NULL,
        PRIMARY KEY (platform, channel)
    )""",
    """CREATE TABLE IF NOT EXISTS feedback (
        platform TEXT NOT NULL,
        channel TEXT NOT NULL,
        thread TEXT NOT NULL DEFAULT '',
        message_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        helpful INTEGER NOT NULL CHECK (helpful IN (0, 1)),
        created_at REAL NOT NULL,
        PRIMARY KEY (platform, channel, message_id, user_id)
    )""",
)


@dataclass(frozen=True)
class Feedback:
    """How a channel's people rated the bot's replies."""

    helpful: int = 0
    unhelpful: int = 0


class ChannelData:
    """Personas and feedback in the history database (created by the history store's migration)."""

    def __init__(self, connection: aiosqlite.Connection, clock: Callable[[], float]) -> None:
        self._db = connection
        self._clock = clock

    async def persona(self, key: ConversationKey) -> str | None:
        """The system prompt set for ``key``'s channel, or ``None``."""
        rows = list(
            await self._db.execute_fetchall(
                "SELECT prompt FROM personas WHERE platform = ? AND channel = ?", (key.platform, key.channel)
            )
        )
        return str(rows[0][0]) if rows else None

    async def set_persona(self, key: ConversationKey, prompt: str | None, set_by: str) -> None:
        """Set (``None``: remove) the system prompt of ``key``'s channel."""
        if prompt is None:
            await self._db.execute(
                "DELETE FROM personas WHERE platform = ? AND channel = ?", (key.platform, key.channel)
            )
            return
        await self._db.execute(
            "INSERT OR REPLACE INTO personas (platform, channel, prompt, set_by, set_at) VALUES (?, ?, ?, ?, ?)",
            (key.platform, key.channel, prompt, set_by, self._clock()),
        )

    async def record_feedback(self, key: ConversationKey, message_id: str, user_id: str, *, helpful: bool) -> None:
        """Record one person's rating of a reply (a second click replaces their first)."""
        await self._db.execute(
            "INSERT OR REPLACE INTO feedback (platform, channel, thread, message_id, user_id, helpful, created_at) "
            "VALUES (:platform, :channel, :thread, :message_id, :user_id, :helpful, :now)",
            {**_columns(key), "message_id": message_id, "user_id": user_id}
            | {"helpful": int(helpful), "now": self._clock()},
        )

    async def feedback(self, key: ConversationKey) -> Feedback:
        """The ratings of replies in ``key``'s channel (its threads included)."""
        rows = list(
            await self._db.execute_fetchall(
                "SELECT COALESCE(SUM(helpful), 0), COUNT(*) - COALESCE(SUM(helpful), 0) FROM feedback "
                "WHERE platform = ? AND channel = ?",
                (key.platform, key.channel),
            )
        )
        return Feedback(int(rows[0][0]), int(rows[0][1]))


def _columns(key: ConversationKey) -> dict[str, str]:
    return {"platform": key.platform, "channel": key.channel, "thread": key.thread or ""}
