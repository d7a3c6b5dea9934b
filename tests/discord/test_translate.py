"""Unit tests of the translation between Discord payloads and the core, from recorded payload dicts.

Payloads are turned into discord.py objects exactly as the gateway parser does
(``discord.Message(state=..., channel=..., data=...)``), then through the adapter's
pure functions; outbound, the adapter's values are checked against the JSON
Discord expects.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlparse

import discord
import pytest
from discord.http import handle_message_parameters

from adapters.discord.client import content_intent_allowed, gateway_intents
from adapters.discord.commands import interaction_key
from adapters.discord.translate import (
    NO_MENTIONS,
    IncomingMessage,
    Trigger,
    TriggerPolicy,
    conversation_key,
    incoming,
    invite_url,
    is_admin,
    notice_text,
    prompt_text,
    trigger,
)
from bot.types import ConversationKey
from tests.discord import payloads
from tests.discord.payloads import (
    ADMIN_ROLE_ID,
    BOT_ID,
    CHANNEL_ID,
    DM_CHANNEL_ID,
    GUILD_ID,
    LISTED_CHANNEL_ID,
    OTHER_BOT_ID,
    THREAD_ID,
    USER_ID,
    WEBHOOK_ID,
    mention,
)

POLICY = TriggerPolicy(BOT_ID, frozenset({str(LISTED_CHANNEL_ID)}), content_intent=True)
NO_CONTENT = TriggerPolicy(BOT_ID, frozenset({str(LISTED_CHANNEL_ID)}), content_intent=False)


@pytest.fixture(scope="module")
def state() -> Any:
    # A client that never connects; its ConnectionState is what the gateway parser builds objects with.
    connection = discord.Client(intents=gateway_intents(True))._connection
    connection.user = discord.ClientUser(state=connection, data=payloads.bot_user())  # type: ignore[arg-type]
    return connection


@pytest.fixture(scope="module")
def guild(state: Any) -> discord.Guild:
    return discord.Guild(data=payloads.guild_create(), state=state)  # type: ignore[arg-type]


def _message(state: Any, guild: discord.Guild, payload: payloads.Payload) -> discord.Message:
    channel: Any
    if "guild_id" in payload:
        channel = guild.get_channel_or_thread(int(payload["channel_id"]))
    else:
        channel = discord.DMChannel(me=state.user, state=state, data=payloads.dm_channel())  # type: ignore[arg-type]
    return discord.Message(state=state, channel=channel, data=payload)  # type: ignore[arg-type]


def _read(state: Any, guild: discord.Guild, payload: payloads.Payload) -> IncomingMessage:
    return incoming(_message(state, guild, payload))


def _mentioning_bot(content: str, **fields: Any) -> payloads.Payload:
    return payloads.message_create(f"{mention()} {content}", mentions=(payloads.bot_user(),), **fields)


def test_mention_in_a_channel(state: Any, guild: discord.Guild) -> None:
    bob = payloads.user(1400000000000000099, "bob")
    payload = payloads.message_create(
        f"<@!{BOT_ID}> what does {mention(1400000000000000099)} think?", mentions=(payloads.bot_user(), bob)
    )
    message = _read(state, guild, payload)

    assert trigger(message, POLICY) is Trigger.MENTION
    assert conversation_key(message.channel_id, message.parent_id) == ConversationKey("discord", str(CHANNEL_ID))
    assert prompt_text(message.content, BOT_ID, message.mention_names) == "what does @Bob think?"


def test_every_direct_message_is_answered(state: Any, guild: discord.Guild) -> None:
    message = _read(state, guild, payloads.message_create("hello", channel_id=DM_CHANNEL_ID, in_guild=False))

    assert message.is_dm and trigger(message, NO_CONTENT) is Trigger.DM
    assert conversation_key(message.channel_id, message.parent_id) == ConversationKey("discord", str(DM_CHANNEL_ID))


def test_thread_is_its_own_conversation(state: Any, guild: discord.Guild) -> None:
    message = _read(state, guild, _mentioning_bot("hi", channel_id=THREAD_ID))

    assert message.parent_id == CHANNEL_ID
    assert conversation_key(message.channel_id, message.parent_id) == ConversationKey(
        "discord", str(CHANNEL_ID), str(THREAD_ID)
    )


def test_reply_to_the_bot_needs_the_content_intent(state: Any, guild: discord.Guild) -> None:
    earlier = payloads.message_create("an earlier answer", author=payloads.bot_user())
    message = _read(state, guild, payloads.message_create("and then?", replying_to=earlier))

    assert message.replied_to_author_id == BOT_ID
    assert trigger(message, POLICY) is Trigger.REPLY
    assert trigger(message, NO_CONTENT) is None


def test_reply_to_someone_else_is_not_a_trigger(state: Any, guild: discord.Guild) -> None:
    earlier = payloads.message_create("a human message")
    assert trigger(_read(state, guild, payloads.message_create("+1", replying_to=earlier)), POLICY) is None


@pytest.mark.parametrize("channel_id", [LISTED_CHANNEL_ID])
def test_listed_channel_answers_everything_with_the_content_intent(
    state: Any, guild: discord.Guild, channel_id: int
) -> None:
    message = _read(state, guild, payloads.message_create("anyone?", channel_id=channel_id))
    assert trigger(message, POLICY) is Trigger.CHANNEL
    assert trigger(message, NO_CONTENT) is None


def test_thread_of_a_listed_channel_counts_as_listed() -> None:
    message = IncomingMessage(1, THREAD_ID, USER_ID, "anyone?", parent_id=LISTED_CHANNEL_ID)
    assert trigger(message, POLICY) is Trigger.CHANNEL


def test_plain_message_elsewhere_is_ignored(state: Any, guild: discord.Guild) -> None:
    assert trigger(_read(state, guild, payloads.message_create("just chatting")), POLICY) is None


@pytest.mark.parametrize(
    "fields",
    [
        {"author": payloads.user(OTHER_BOT_ID, "otherbot", bot=True)},
        {"author": payloads.user(WEBHOOK_ID, "hook", bot=True), "webhook_id": WEBHOOK_ID},
        {"author": payloads.bot_user()},
        {"channel_id": DM_CHANNEL_ID, "in_guild": False, "author": payloads.user(OTHER_BOT_ID, "dmbot", bot=True)},
    ],
    ids=["other bot", "webhook", "itself", "bot in a DM"],
)
def test_bots_webhooks_and_itself_never_trigger(state: Any, guild: discord.Guild, fields: dict[str, Any]) -> None:
    assert trigger(_read(state, guild, _mentioning_bot("hi", **fields)), POLICY) is None


def test_system_messages_never_trigger(state: Any, guild: discord.Guild) -> None:
    payload = _mentioning_bot("joined") | {"type": 7}  # a member-join notice
    assert trigger(_read(state, guild, payload), POLICY) is None


def test_prompt_text_keeps_unknown_mentions_and_code() -> None:
    content = f"{mention()}\n```py\nprint('<@123>')\n```"
    assert prompt_text(content, BOT_ID, {}) == "```py\nprint('<@123>')\n```"


def test_admins_by_user_or_role_id() -> None:
    admins = {str(USER_ID), str(ADMIN_ROLE_ID)}
    assert is_admin(USER_ID, [], admins)
    assert is_admin(42, [GUILD_ID, ADMIN_ROLE_ID], admins)
    assert not is_admin(42, [GUILD_ID], admins)


def test_interaction_keys(state: Any) -> None:
    in_channel = discord.Interaction(data=payloads.interaction_create("reset"), state=state)  # type: ignore[arg-type]
    in_thread = discord.Interaction(
        data=payloads.interaction_create("reset", channel=payloads.thread_channel()),  # type: ignore[arg-type]
        state=state,
    )
    in_dm = discord.Interaction(
        data=payloads.interaction_create("reset", channel=payloads.dm_channel(), in_guild=False),  # type: ignore[arg-type]
        state=state,
    )
    assert interaction_key(in_channel) == ConversationKey("discord", str(CHANNEL_ID))
    assert interaction_key(in_thread) == ConversationKey("discord", str(CHANNEL_ID), str(THREAD_ID))
    assert interaction_key(in_dm) == ConversationKey("discord", str(DM_CHANNEL_ID))


def test_outgoing_text_never_pings() -> None:
    params = handle_message_parameters(content="@everyone <@&1> <@2> hi", allowed_mentions=NO_MENTIONS)
    assert params.payload is not None and params.payload["allowed_mentions"] == {"parse": []}


def test_notice_is_subtext() -> None:
    assert notice_text("Your message was cut.") == "-# Your message was cut."


def test_invite_url_has_scopes_and_permissions() -> None:
    query = parse_qs(urlparse(invite_url(BOT_ID)).query)
    assert query["client_id"] == [str(BOT_ID)]
    assert query["scope"] == ["bot applications.commands"]
    granted = discord.Permissions(int(query["permissions"][0]))
    assert granted.send_messages and granted.send_messages_in_threads and granted.read_message_history
    assert not granted.administrator and not granted.mention_everyone


@pytest.mark.parametrize(
    ("flags", "allowed"),
    [(0, False), (1 << 18, True), (payloads.MESSAGE_CONTENT_FLAG, True)],
)
def test_content_intent_from_application_flags(flags: int, allowed: bool) -> None:
    assert content_intent_allowed(discord.ApplicationFlags._from_value(flags)) is allowed


def test_intents_request_content_only_when_allowed() -> None:
    assert gateway_intents(True).message_content and not gateway_intents(False).message_content
    assert not gateway_intents(True).members and not gateway_intents(True).presences  # no other privileged intents
