"""Pure translation of the plain dictionaries Slack sends into the core's neutral types (no I/O)."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from adapters.slack.files import SlackFile, files_of
from bot.attribution import UNKNOWN, clean_name
from bot.types import ConversationKey, Identity, Incoming

PLATFORM = "slack"
# The slash commands slack-manifest.yaml declares.
COMMANDS = ("/ask", "/reset", "/stats", "/export", "/persona")

# Plain messages, files with a caption and thread replies also sent to the channel.
# Every other subtype (edits, deletions, joins, bot_message ...) is not something to answer.
ANSWERED_SUBTYPES = frozenset({"", "file_share", "thread_broadcast"})

# <...> spans Slack uses for mentions, channels, special mentions and links.
_SPAN = re.compile(r"<([^<>]*)>")
_SPECIAL_MENTIONS = frozenset({"here", "channel", "everyone"})
# A user mention: the id must become a name before the model reads it (a label is only the legacy handle).
_USER_MENTION = re.compile(r"<@([A-Z0-9]+)(?:\|[^<>]*)?>")


@dataclass(frozen=True)
class SlackMessage:
    """A Slack message the bot answers, reduced to what the core needs."""

    channel: str
    ts: str
    thread_ts: str
    user: str
    text: str
    files: tuple[SlackFile, ...] = field(default=(), compare=False)

    @property
    def key(self) -> ConversationKey:
        """The conversation this message belongs to: its channel and thread."""
        return ConversationKey(PLATFORM, self.channel, self.thread_ts)

    @property
    def message_id(self) -> str:
        """Identifies the message itself, whichever event delivered it."""
        return f"{self.channel}:{self.ts}"


def channel_key(channel: str) -> ConversationKey:
    """The channel-wide conversation slash commands use (Slack does not tell them the thread)."""
    return ConversationKey(PLATFORM, channel)


def to_message(
    event: Mapping[str, Any], bot_user_id: str, names: Mapping[str, str] | None = None
) -> SlackMessage | None:
    """The message in a ``message`` or ``app_mention`` event, or ``None`` if it is not a human's new message.

    ``names`` are the display names of the people it mentions (``mentioned_users``); others read as ``@someone``.
    """
    from_bot = event.get("bot_id") or event.get("user") == bot_user_id or event.get("subtype") == "bot_message"
    if from_bot or str(event.get("subtype") or "") not in ANSWERED_SUBTYPES:
        return None
    channel, ts, user = event.get("channel"), event.get("ts"), event.get("user")
    if not (isinstance(channel, str) and isinstance(ts, str) and isinstance(user, str)):
        return None
    thread_ts = event.get("thread_ts")
    return SlackMessage(
        channel=channel,
        ts=ts,
        thread_ts=thread_ts if isinstance(thread_ts, str) and thread_ts else ts,
        user=user,
        text=clean_text(str(event.get("text") or ""), bot_user_id, names),
        files=files_of(event),
    )


def mentioned_users(text: str, bot_user_id: str) -> set[str]:
    """The people a message mentions (``<@U123>``, ``<@U123|handle>``), the bot excepted: their names are needed."""
    return {user for user in _USER_MENTION.findall(text) if user != bot_user_id}


def is_mention_copy(event: Mapping[str, Any], bot_user_id: str) -> bool:
    """Whether a ``message`` event mentions the bot outside a DM: Slack delivers it as ``app_mention`` as well."""
    if event.get("type") != "message" or event.get("channel_type") == "im":
        return False  # Slack sends no app_mention for a direct message
    return bot_user_id in _USER_MENTION.findall(str(event.get("text") or ""))


def thread_of(event: Mapping[str, Any]) -> tuple[str, str]:
    """The (channel, thread ts) an event's message belongs to (a top-level message starts its own thread)."""
    return str(event.get("channel") or ""), str(event.get("thread_ts") or event.get("ts") or "")


def is_addressed(
    event: Mapping[str, Any],
    *,
    mentioned: bool,
    watched_channels: Collection[str],
    follows_thread: Callable[[str, str], bool],
) -> bool:
    """Whether the bot should answer: a mention, a DM, a watched channel or a thread it already answers."""
    if mentioned or event.get("channel_type") == "im" or event.get("channel") in watched_channels:
        return True
    thread_ts, channel = event.get("thread_ts"), event.get("channel")
    return isinstance(thread_ts, str) and isinstance(channel, str) and follows_thread(channel, thread_ts)


def to_command(
    body: Mapping[str, Any], bot_user_id: str, names: Mapping[str, str] | None = None, author: str = ""
) -> Incoming:
    """A slash command payload for the core, in the channel's conversation (``/ASK`` is ``/ask``).

    ``author`` is the asker's display name; ``names`` those of the people the text mentions.
    """
    return Incoming(
        channel_key(str(body.get("channel_id") or "")),
        Identity(PLATFORM, str(body.get("user_id") or ""), name=author),
        clean_text(str(body.get("text") or ""), bot_user_id, names),
        command=str(body.get("command") or "").strip().lstrip("/").lower(),
    )


def clean_text(text: str, bot_user_id: str, names: Mapping[str, str] | None = None) -> str:
    """Slack's message markup as plain text for the model, without the bot's own mention.

    A user mention reads as ``@`` and the person's name (from ``names`` by id; ``@someone`` if unknown), never an id.
    """
    plain = _SPAN.sub(lambda match: _plain_span(match.group(1), bot_user_id, names or {}), text)
    plain = re.sub(r"[ \t]{2,}", " ", plain)
    # &amp; last: "&amp;lt;" is a literal "&lt;" typed by the user.
    return plain.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&").strip()


def _plain_span(span: str, bot_user_id: str, names: Mapping[str, str]) -> str:
    target, _, label = span.partition("|")
    if not target:
        # Not Slack's markup (it escapes a typed "<"): text such as "<|end|>" from an API client, kept as sent.
        return f"<{span}>"
    if target.startswith("@"):
        user = target[1:]
        return "" if user == bot_user_id else f"@{clean_name(names.get(user) or label or UNKNOWN)}"
    if target.startswith("#"):
        # Slack now sends channel links without a label (<#C123|>): the model reads no id, only a word.
        return f"#{label or 'channel'}"
    if target.startswith("!"):
        name = target[1:].split("^", 1)[0]
        return f"@{name}" if name in _SPECIAL_MENTIONS else label or name
    if label and label != target:
        return f"{label} ({target})"
    return target.removeprefix("mailto:")
