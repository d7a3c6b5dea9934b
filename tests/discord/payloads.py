"""Discord API payloads in the shape Discord sends them (API v10), for the stand-in and unit tests.

Each builder returns a fresh dict as recorded from Discord's gateway and REST
responses, trimmed to the fields a bot receives; ids are fixed so tests can
refer to them.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

Payload = dict[str, Any]

TOKEN = "stand-in-bot-token.abc"
BOT_ID = 1100000000000000001
APP_ID = BOT_ID  # Discord bots' application id equals their user id
GUILD_ID = 1200000000000000001
CHANNEL_ID = 1300000000000000001  # #general
LISTED_CHANNEL_ID = 1300000000000000002  # a channel named in DISCORD_CHANNELS
THREAD_ID = 1300000000000000003  # a thread in #general
DM_CHANNEL_ID = 1300000000000000009
USER_ID = 1400000000000000001
ADMIN_USER_ID = 1400000000000000002
OTHER_BOT_ID = 1400000000000000003
ADMIN_ROLE_ID = 1500000000000000001
WEBHOOK_ID = 1600000000000000001
TIMESTAMP = "2026-01-05T10:00:00.000000+00:00"

# ApplicationFlags: GATEWAY_MESSAGE_CONTENT_LIMITED (the developer-portal toggle of an unverified bot).
MESSAGE_CONTENT_FLAG = 1 << 19
MESSAGE_CONTENT_INTENT = 1 << 15

_ids = itertools.count(1700000000000000001)


def new_id() -> int:
    """A fresh snowflake for messages and interactions."""
    return next(_ids)


def user(user_id: int = USER_ID, name: str = "alice", *, bot: bool = False) -> Payload:
    """A user object."""
    return {
        "id": str(user_id),
        "username": name,
        "discriminator": "0",
        "global_name": name.title(),
        "avatar": None,
        "bot": bot,
        "public_flags": 0,
    }


def bot_user() -> Payload:
    """GET /users/@me for the bot."""
    return user(BOT_ID, "teambot", bot=True) | {"verified": True, "mfa_enabled": False, "flags": 0}


def application(flags: int = MESSAGE_CONTENT_FLAG) -> Payload:
    """GET /oauth2/applications/@me."""
    return {
        "id": str(APP_ID),
        "name": "teambot",
        "icon": None,
        "description": "",
        "bot_public": True,
        "bot_require_code_grant": False,
        "owner": user(ADMIN_USER_ID, "owner"),
        "verify_key": "0" * 64,
        "team": None,
        "flags": flags,
        "summary": "",
    }


def member(user_payload: Payload, roles: tuple[int, ...] = ()) -> Payload:
    """A guild member (as in MESSAGE_CREATE's ``member`` or an interaction's)."""
    return {
        "user": user_payload,
        "roles": [str(role) for role in roles],
        "joined_at": TIMESTAMP,
        "nick": None,
        "deaf": False,
        "mute": False,
        "flags": 0,
        "pending": False,
        "permissions": "2248473465835073",
    }


def _text_channel(channel_id: int, name: str, position: int) -> Payload:
    return {
        "id": str(channel_id),
        "type": 0,
        "guild_id": str(GUILD_ID),
        "name": name,
        "position": position,
        "permission_overwrites": [],
        "topic": None,
        "nsfw": False,
        "parent_id": None,
        "rate_limit_per_user": 0,
        "last_message_id": None,
    }


def thread() -> Payload:
    """The active public thread in #general."""
    return {
        "id": str(THREAD_ID),
        "type": 11,
        "guild_id": str(GUILD_ID),
        "parent_id": str(CHANNEL_ID),
        "owner_id": str(USER_ID),
        "name": "design talk",
        "last_message_id": None,
        "message_count": 1,
        "member_count": 2,
        "rate_limit_per_user": 0,
        "flags": 0,
        "thread_metadata": {
            "archived": False,
            "auto_archive_duration": 1440,
            "archive_timestamp": TIMESTAMP,
            "locked": False,
        },
    }


def _role(role_id: int, name: str, permissions: str) -> Payload:
    return {
        "id": str(role_id),
        "name": name,
        "color": 0,
        "hoist": False,
        "position": 0 if role_id == GUILD_ID else 1,
        "permissions": permissions,
        "managed": False,
        "mentionable": False,
        "flags": 0,
    }


def guild_create(extra_channels: Sequence[int] = ()) -> Payload:
    """GUILD_CREATE for the one test server, with #general, a listed channel and a thread.

    ``extra_channels`` adds a text channel (#extra-1, #extra-2 ...) for each id, for tests with many channels.
    """
    extras = [_text_channel(channel, f"extra-{n}", n + 1) for n, channel in enumerate(extra_channels, start=1)]
    return {
        "id": str(GUILD_ID),
        "name": "Team",
        "icon": None,
        "owner_id": str(ADMIN_USER_ID),
        "unavailable": False,
        "large": False,
        "member_count": 4,
        "joined_at": TIMESTAMP,
        "features": [],
        "mfa_level": 0,
        "verification_level": 0,
        "explicit_content_filter": 0,
        "default_message_notifications": 0,
        "premium_tier": 0,
        "preferred_locale": "en-US",
        "system_channel_id": None,
        "afk_channel_id": None,
        "afk_timeout": 300,
        "nsfw_level": 0,
        "roles": [_role(GUILD_ID, "@everyone", "104324673"), _role(ADMIN_ROLE_ID, "bot-admins", "104324673")],
        "emojis": [],
        "stickers": [],
        "channels": [
            _text_channel(CHANNEL_ID, "general", 0),
            _text_channel(LISTED_CHANNEL_ID, "ask-the-bot", 1),
            *extras,
        ],
        "threads": [thread()],
        "members": [member(bot_user())],
        "voice_states": [],
        "presences": [],
        "stage_instances": [],
        "guild_scheduled_events": [],
        "soundboard_sounds": [],
    }


def ready(session_id: str, resume_url: str, flags: int) -> Payload:
    """The READY dispatch after IDENTIFY."""
    return {
        "v": 10,
        "user": bot_user(),
        "guilds": [{"id": str(GUILD_ID), "unavailable": True}],
        "session_id": session_id,
        "resume_gateway_url": resume_url,
        "application": {"id": str(APP_ID), "flags": flags},
        "private_channels": [],
        "relationships": [],
        "user_settings": {},
        "geo_ordered_rtc_regions": [],
        "guild_join_requests": [],
    }


def message_create(
    content: str,
    *,
    channel_id: int = CHANNEL_ID,
    author: Payload | None = None,
    in_guild: bool = True,
    mentions: tuple[Payload, ...] = (),
    webhook_id: int | None = None,
    replying_to: Payload | None = None,
) -> Payload:
    """A MESSAGE_CREATE dispatch as a bot with the guild_messages/dm_messages intents receives it."""
    author = author or user()
    payload: Payload = {
        "id": str(new_id()),
        "channel_id": str(channel_id),
        "author": author,
        "content": content,
        "timestamp": TIMESTAMP,
        "edited_timestamp": None,
        "tts": False,
        "mention_everyone": False,
        "mentions": list(mentions),
        "mention_roles": [],
        "attachments": [],
        "embeds": [],
        "pinned": False,
        "type": 19 if replying_to else 0,
        "flags": 0,
        "components": [],
    }
    if in_guild:
        payload["guild_id"] = str(GUILD_ID)
        if webhook_id is None:
            payload["member"] = {key: value for key, value in member(author).items() if key != "user"}
    if webhook_id is not None:
        payload["webhook_id"] = str(webhook_id)
    if replying_to is not None:
        reference = {"message_id": replying_to["id"], "channel_id": str(channel_id), "type": 0}
        payload["message_reference"] = reference | ({"guild_id": str(GUILD_ID)} if in_guild else {})
        payload["referenced_message"] = replying_to
    return payload


def mention(user_id: int = BOT_ID) -> str:
    """How a user mention is written in message content."""
    return f"<@{user_id}>"


def interaction_create(
    name: str,
    options: dict[str, str] | None = None,
    *,
    channel: Payload | None = None,
    invoker: Payload | None = None,
    roles: tuple[int, ...] = (),
    in_guild: bool = True,
) -> Payload:
    """An INTERACTION_CREATE dispatch for a slash command (type 2, chat input)."""
    channel = channel or _text_channel(CHANNEL_ID, "general", 0)
    invoker = invoker or user()
    payload: Payload = {
        "id": str(new_id()),
        "application_id": str(APP_ID),
        "type": 2,
        "token": f"interaction-token-{new_id()}",
        "version": 1,
        "channel_id": channel["id"],
        "channel": channel,
        "locale": "en-US",
        "app_permissions": "2248473465835073",
        "attachment_size_limit": 10485760,
        "entitlements": [],
        "authorizing_integration_owners": {"0": str(GUILD_ID)} if in_guild else {"1": invoker["id"]},
        "context": 0 if in_guild else 1,
        "data": {
            "id": str(new_id()),
            "name": name,
            "type": 1,
            "options": [{"name": key, "type": 3, "value": value} for key, value in (options or {}).items()],
        },
    }
    if in_guild:
        payload["guild_id"] = str(GUILD_ID)
        payload["guild_locale"] = "en-US"
        payload["member"] = member(invoker, roles)
    else:
        payload["user"] = invoker
    return payload


def dm_channel() -> Payload:
    """The DM channel between the bot and the test user."""
    return {"id": str(DM_CHANNEL_ID), "type": 1, "recipients": [user()], "last_message_id": None}


def thread_channel() -> Payload:
    """The thread as an interaction's ``channel`` field carries it."""
    return thread()
