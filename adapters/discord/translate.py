"""Pure translation between discord.py objects and the core's neutral types.

Inbound: a ``discord.Message`` becomes an ``IncomingMessage``; ``trigger`` decides
whether the bot answers it, ``conversation_key`` where it belongs and ``prompt_text``
what the model reads.  Outbound: what every post carries (no mentions), how notices
look, and the invite URL.  Nothing here touches the network.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

import discord

from bot.types import ConversationKey

PLATFORM = "discord"
MESSAGE_LIMIT = 2000
FAILED = "Sorry, something went wrong while answering."

# Model output must never ping anyone: every send and edit carries this.
NO_MENTIONS = discord.AllowedMentions.none()

INVITE_SCOPES = ("bot", "applications.commands")
INVITE_PERMISSIONS = discord.Permissions(send_messages=True, send_messages_in_threads=True, read_message_history=True)

_USER_MENTION = re.compile(r"<@!?(\d+)>")


class Trigger(enum.Enum):
    """Why the bot answers a message."""

    DM = "direct message"
    MENTION = "mention"
    REPLY = "reply to the bot"
    CHANNEL = "listed channel"


@dataclass(frozen=True)
class IncomingMessage:
    """The parts of a Discord message the adapter decides on, as plain values."""

    message_id: int
    channel_id: int
    author_id: int
    content: str
    is_dm: bool = False
    parent_id: int | None = None  # the parent channel when the message is in a thread
    author_is_bot: bool = False
    from_webhook: bool = False
    is_system: bool = False
    mentioned_ids: frozenset[int] = frozenset()
    mention_names: Mapping[int, str] = field(default_factory=dict)
    replied_to_author_id: int | None = None


@dataclass(frozen=True)
class TriggerPolicy:
    """What makes the bot answer: its own id, the always-answer channels, the content intent."""

    bot_id: int
    channels: frozenset[str] = frozenset()
    content_intent: bool = True


def thread_parent(channel: object) -> int | None:
    """The parent channel's id when ``channel`` is a thread, else ``None``."""
    return channel.parent_id if isinstance(channel, discord.Thread) else None


def incoming(message: discord.Message) -> IncomingMessage:
    """Read the fields ``trigger``, ``conversation_key`` and ``prompt_text`` need."""
    reference = message.reference
    resolved = reference.resolved if reference is not None else None
    return IncomingMessage(
        message_id=message.id,
        channel_id=message.channel.id,
        author_id=message.author.id,
        content=message.content,
        is_dm=message.guild is None,
        parent_id=thread_parent(message.channel),
        author_is_bot=message.author.bot,
        from_webhook=message.webhook_id is not None,
        is_system=message.is_system(),
        mentioned_ids=frozenset(user.id for user in message.mentions),
        mention_names={user.id: user.display_name for user in message.mentions},
        replied_to_author_id=resolved.author.id if isinstance(resolved, discord.Message) else None,
    )


def trigger(message: IncomingMessage, policy: TriggerPolicy) -> Trigger | None:
    """Why the bot should answer ``message``, or ``None`` to stay silent.

    Without the message_content intent Discord sends text only for mentions and DMs,
    so replies and listed channels cannot trigger then.
    """
    if message.author_id == policy.bot_id or message.author_is_bot or message.from_webhook or message.is_system:
        return None
    if message.is_dm:
        return Trigger.DM
    if policy.bot_id in message.mentioned_ids:
        return Trigger.MENTION
    if not policy.content_intent:
        return None
    if message.replied_to_author_id == policy.bot_id:
        return Trigger.REPLY
    listed = {str(message.channel_id), str(message.parent_id)} & policy.channels
    return Trigger.CHANNEL if listed else None


def conversation_key(channel_id: int, parent_id: int | None = None) -> ConversationKey:
    """The channel's conversation, or the thread's own when the message is in a thread."""
    if parent_id is None:
        return ConversationKey(PLATFORM, str(channel_id))
    return ConversationKey(PLATFORM, str(parent_id), str(channel_id))


def channel_key(channel: object, channel_id: int) -> ConversationKey:
    """The conversation of a discord.py channel object (a thread keeps its own)."""
    return conversation_key(channel_id, thread_parent(channel))


def prompt_text(content: str, bot_id: int, names: Mapping[int, str]) -> str:
    """What the model reads: the bot's own mention removed, other users' mentions as @name."""

    def replace(match: re.Match[str]) -> str:
        user_id = int(match.group(1))
        if user_id == bot_id:
            return ""
        return f"@{names[user_id]}" if user_id in names else match.group(0)

    return _USER_MENTION.sub(replace, content).strip()


def is_admin(user_id: int, role_ids: Iterable[int], admin_ids: Collection[str]) -> bool:
    """Whether the user, or one of their roles, is listed in ``DISCORD_ADMIN_IDS``."""
    return str(user_id) in admin_ids or any(str(role) in admin_ids for role in role_ids)


def notice_text(notice: str) -> str:
    """A core notice shown under a reply, in Discord's small subtext style."""
    return f"-# {notice}"


def invite_url(application_id: int | str) -> str:
    """The OAuth2 URL that adds the bot to a server with the scopes and permissions it needs."""
    return discord.utils.oauth_url(application_id, permissions=INVITE_PERMISSIONS, scopes=INVITE_SCOPES)
