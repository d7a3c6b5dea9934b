"""Neutral types the core speaks with every adapter: where a message belongs, who wrote it, what it says."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


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
    # How people see them (a display name); not part of who they are: a renamed user keeps their identity.
    name: str = field(default="", compare=False)

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
    platform has none (the console, a slash command).  ``attachments`` are files sent with it;
    ``context`` is a discussion the message asks about (a thread read through the platform's API,
    oldest first), with ``command="summarize"`` for a summary of it and ``text`` the question otherwise.
    """

    key: ConversationKey
    author: Identity
    text: str
    command: str | None = None
    message_id: str | None = None
    attachments: tuple[Attachment, ...] = ()
    context: tuple[Said, ...] = ()


@dataclass(frozen=True)
class Attachment:
    """A file attached to a message; ``read(limit)`` downloads at most ``limit`` bytes of it.

    ``size`` and ``content_type`` are what the platform says of it (``None``: it does not say).
    """

    name: str
    size: int | None
    content_type: str | None
    read: Callable[[int], Awaitable[bytes]] = field(repr=False, compare=False)


@dataclass(frozen=True)
class Said:
    """One message of a discussion the bot is asked about (a thread to catch up on), as people saw it."""

    author: str  # the display name, never a platform id
    text: str
