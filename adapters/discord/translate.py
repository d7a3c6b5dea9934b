"""Pure translation between discord.py objects and the core's types; nothing here touches the network.

Inbound: whether the bot answers a message and the core's ``Incoming`` of it (or of a
slash command).  Outbound: no mentions on any post, how each kind of text looks, the invite URL.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import discord

from adapters.discord.files import attachments_of
from bot.attribution import UNKNOWN, with_files
from bot.surface import Kind
from bot.types import ConversationKey, Identity, Incoming, Said

PLATFORM = "discord"

# Model output must never ping anyone: every send and edit carries this.
NO_MENTIONS = discord.AllowedMentions.none()

INVITE_SCOPES = ("bot", "applications.commands")
INVITE_PERMISSIONS = discord.Permissions(send_messages=True, send_messages_in_threads=True, read_message_history=True)

# A user (<@id>, <@!id>), role (<@&id>) or channel (<#id>) mention as Discord writes it: ids are snowflakes.
_MENTION = re.compile(r"<(@!?|@&|#)([0-9]{15,20})>")
# A custom emoji (<:name:id>, animated <a:name:id>) and a slash-command mention (</name:id>, </name sub:id>).
_EMOJI = re.compile(r"<a?:([^\s:<>]{1,32}):[0-9]{15,20}>")
_COMMAND = re.compile(r"</([^\s:<>/]{1,32}(?: [^\s:<>/]{1,32}){0,2}):[0-9]{15,20}>")


class Trigger(enum.Enum):
    """Why the bot answers a message."""

    DM = "direct message"
    MENTION = "mention"
    REPLY = "reply to the bot"
    CHANNEL = "listed channel"


@dataclass(frozen=True)
class TriggerPolicy:
    """What makes the bot answer: its own id, the always-answer channels, the content intent."""

    bot_id: int
    channels: frozenset[str] = frozenset()
    content_intent: bool = True


def thread_parent(channel: object) -> int | None:
    """The parent channel's id when ``channel`` is a thread, else ``None``."""
    return channel.parent_id if isinstance(channel, discord.Thread) else None


def trigger(message: discord.Message, policy: TriggerPolicy) -> Trigger | None:
    """Why the bot should answer ``message``, or ``None`` to stay silent (bots, webhooks and system messages).

    Without the message_content intent Discord sends text only for mentions and DMs,
    so replies and listed channels cannot trigger then.
    """
    author = message.author
    if author.id == policy.bot_id or author.bot or message.webhook_id is not None or message.is_system():
        return None
    if message.guild is None:
        return Trigger.DM
    if any(user.id == policy.bot_id for user in message.mentions):
        return Trigger.MENTION
    if not policy.content_intent:
        return None
    replied_to = message.reference.resolved if message.reference else None
    if isinstance(replied_to, discord.Message) and replied_to.author.id == policy.bot_id:
        return Trigger.REPLY
    listed = {str(message.channel.id), str(thread_parent(message.channel))} & policy.channels
    return Trigger.CHANNEL if listed else None


def conversation_key(channel: object, channel_id: int) -> ConversationKey:
    """The channel's conversation, or the thread's own when ``channel`` is a thread."""
    parent_id = thread_parent(channel)
    if parent_id is None:
        return ConversationKey(PLATFORM, str(channel_id))
    return ConversationKey(PLATFORM, str(parent_id), str(channel_id))


def identity(user: discord.User | discord.Member) -> Identity:
    """Who wrote a message or used a command, with their server roles (none in a DM) except @everyone.

    @everyone's id is the server's: counting it would make everybody an admin once the server id is listed.
    The name is the one people see (the server nickname, else the global display name), never the id.
    """
    roles = user.roles if isinstance(user, discord.Member) else []
    role_ids = frozenset(str(role.id) for role in roles if not role.is_default())
    return Identity(PLATFORM, str(user.id), role_ids, name=user.display_name)


@dataclass(frozen=True)
class Names:
    """What a message's mentions stand for, by id: people's display names, role and channel names."""

    users: Mapping[int, str] = field(default_factory=dict)
    roles: Mapping[int, str] = field(default_factory=dict)
    channels: Mapping[int, str] = field(default_factory=dict)


def names_in(message: discord.Message) -> Names:
    """The names of everything ``message`` mentions that discord.py can resolve (the payload, then the cache)."""
    guild = message.guild
    users = {user.id: user.display_name for user in message.mentions}
    roles = {role.id: role.name for role in message.role_mentions}
    channels = {channel.id: channel.name for channel in message.channel_mentions}
    if guild is not None:
        for user_id in message.raw_mentions:
            if user_id not in users and (member := guild.get_member(user_id)) is not None:
                users[user_id] = member.display_name
    return Names(users, roles, channels)


def prompt_text(content: str, bot_id: int | None, names: Names = Names()) -> str:
    """What the model reads: the bot's own mention removed, others as ``@Name``/``#channel``, never a raw id.

    A mention discord.py cannot resolve becomes ``@someone`` (a person or role) or ``#channel``; a custom
    emoji becomes ``:name:`` and a slash-command mention ``/name`` (ids mean nothing to the model).
    """

    def replace(match: re.Match[str]) -> str:
        kind, target = match.group(1), int(match.group(2))
        if kind == "#":
            return f"#{names.channels.get(target, 'channel')}"
        if kind == "@&":
            return f"@{names.roles.get(target, UNKNOWN)}"
        if target == bot_id:
            return ""
        return f"@{names.users.get(target, UNKNOWN)}"

    readable = _COMMAND.sub(r"/\1", _EMOJI.sub(r":\1:", content))
    return _MENTION.sub(replace, readable).strip()


def author_name(message: discord.Message) -> str:
    """The name people see on ``message``: the member's nickname where the server's cache knows it."""
    member = message.guild.get_member(message.author.id) if message.guild is not None else None
    return (member or message.author).display_name


def said(message: discord.Message) -> Said:
    """One message of a discussion as the model reads it: its author's name, its text and its files' names."""
    text = prompt_text(message.content, None, names_in(message))
    return Said(author_name(message), with_files(text, [attachment.filename for attachment in message.attachments]))


def to_incoming(message: discord.Message, policy: TriggerPolicy) -> tuple[Trigger, Incoming] | None:
    """Why the bot answers ``message`` and what the core gets of it, or ``None`` when the bot stays silent.

    A bare mention or DM is handed on (the core answers with help, or reads the files sent alone); a
    post with neither text nor files in a listed channel or a reply (a sticker, say) is no question.
    """
    why = trigger(message, policy)
    if why is None:
        return None
    text = prompt_text(message.content, policy.bot_id, names_in(message))
    files = attachments_of(message)
    if not text and not files and why in (Trigger.REPLY, Trigger.CHANNEL):
        return None
    key = conversation_key(message.channel, message.channel.id)
    return why, Incoming(key, identity(message.author), text, attachments=files)


def command_incoming(interaction: discord.Interaction[discord.Client], name: str, argument: str) -> Incoming:
    """A slash command as the core gets it, in the conversation of its channel (a thread keeps its own)."""
    key = conversation_key(interaction.channel, interaction.channel_id or 0)
    return Incoming(key, identity(interaction.user), argument, command=name)


def render(text: str, kind: Kind) -> str:
    """How a core text looks on Discord: notices in the small subtext style, the rest as they are."""
    return f"-# {text}" if kind is Kind.NOTICE else text


def invite_url(application_id: int | str) -> str:
    """The OAuth2 URL that adds the bot to a server with the scopes and permissions it needs."""
    return discord.utils.oauth_url(application_id, permissions=INVITE_PERMISSIONS, scopes=INVITE_SCOPES)
