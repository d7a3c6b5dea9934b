"""Neutral types the core speaks with every adapter: where a message belongs, who wrote it, what it says."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConversationKey:
    """Identifies one conversation: a platform, a channel and optionally a thread in it."""

    platform: str
    channel: str
    thread: str | None = None

    def __str__(self) -> str:
        suffix = f"/{self.thread}" if self.thread else ""
        return f"{self.platform}:{self.channel}{suffix}"


@dataclass(frozen=True)
class Identity:
    """Who wrote a message: a user of one platform, with the roles that platform gives them there."""

    platform: str
    user_id: str
    role_ids: frozenset[str] = frozenset()

    def __str__(self) -> str:
        return f"{self.platform}:{self.user_id}"


@dataclass(frozen=True)
class Incoming:
    """A message for the bot, as every adapter hands it to the core.

    ``command`` is set when the platform itself says which command was used (a slash
    command: ``"ask"``, ``"reset"`` ...) and ``text`` is then its argument; ``None``
    means ``text`` is what the user typed, which may itself be a command such as ``/reset``.
    ``message_id`` is the platform's id of the message (Slack's ts, Discord's snowflake), which the
    core's inbox uses to answer each message exactly once, across restarts too; ``None`` where the
    platform has none (the console, a slash command).
    """

    key: ConversationKey
    author: Identity
    text: str
    command: str | None = None
    message_id: str | None = None
