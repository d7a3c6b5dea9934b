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

from adapters.discord import DiscordConfig
from adapters.discord.client import content_intent_allowed, gateway_intents
from adapters.discord.translate import (
    NO_MENTIONS,
    Names,
    Trigger,
    TriggerPolicy,
    command_incoming,
    invite_url,
    prompt_text,
    render,
    said,
    to_incoming,
    trigger,
)
from bot.surface import Kind
from bot.types import ConversationKey, Identity, Incoming, Said
from tests.discord import payloads
from tests.discord.payloads import (
    ADMIN_ROLE_ID,
    ADMIN_USER_ID,
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
    guild = discord.Guild(data=payloads.guild_create(), state=state)  # type: ignore[arg-type]
    state._add_guild(guild)  # as GUILD_CREATE does: interactions find their server (and its roles) here
    return guild


def _message(state: Any, guild: discord.Guild, payload: payloads.Payload) -> discord.Message:
    channel: Any
    if "guild_id" in payload:
        channel = guild.get_channel_or_thread(int(payload["channel_id"]))
    else:
        channel = discord.DMChannel(me=state.user, state=state, data=payloads.dm_channel())  # type: ignore[arg-type]
    return discord.Message(state=state, channel=channel, data=payload)  # type: ignore[arg-type]


def _read(state: Any, guild: discord.Guild, payload: payloads.Payload) -> discord.Message:
    return _message(state, guild, payload)


def _incoming(message: discord.Message, policy: TriggerPolicy = POLICY) -> Incoming:
    found = to_incoming(message, policy)
    assert found is not None, "the bot should answer this message"
    return found[1]


def _mentioning_bot(content: str, **fields: Any) -> payloads.Payload:
    return payloads.message_create(f"{mention()} {content}", mentions=(payloads.bot_user(),), **fields)


def test_mention_in_a_channel(state: Any, guild: discord.Guild) -> None:
    bob = payloads.user(1400000000000000099, "bob")
    payload = payloads.message_create(
        f"<@!{BOT_ID}> what does {mention(1400000000000000099)} think?", mentions=(payloads.bot_user(), bob)
    )
    message = _read(state, guild, payload)

    assert trigger(message, POLICY) is Trigger.MENTION
    assert _incoming(message) == Incoming(
        ConversationKey("discord", str(CHANNEL_ID)), Identity("discord", str(USER_ID)), "what does @Bob think?"
    )


def test_a_bare_mention_is_handed_on_empty(state: Any, guild: discord.Guild) -> None:
    # The core answers an empty message with its help text, so the adapter must not drop it.
    assert _incoming(_read(state, guild, _mentioning_bot(""))).text == ""


def test_an_empty_post_in_a_listed_channel_is_no_question(state: Any, guild: discord.Guild) -> None:
    message = _read(state, guild, payloads.message_create("", channel_id=LISTED_CHANNEL_ID))
    assert trigger(message, POLICY) is Trigger.CHANNEL and to_incoming(message, POLICY) is None


def test_roles_except_everyone_make_the_identity(state: Any, guild: discord.Guild) -> None:
    payload = _mentioning_bot("hi")
    payload["member"]["roles"] = [str(ADMIN_ROLE_ID)]
    author = _incoming(_read(state, guild, payload)).author
    # discord.py adds @everyone (whose id is the server's) to every member's roles; it must not count.
    assert author == Identity("discord", str(USER_ID), frozenset({str(ADMIN_ROLE_ID)}))
    assert str(GUILD_ID) not in author.role_ids


def test_every_direct_message_is_answered(state: Any, guild: discord.Guild) -> None:
    message = _read(state, guild, payloads.message_create("hello", channel_id=DM_CHANNEL_ID, in_guild=False))

    assert trigger(message, NO_CONTENT) is Trigger.DM
    incoming = _incoming(message, NO_CONTENT)
    assert incoming.key == ConversationKey("discord", str(DM_CHANNEL_ID))
    assert incoming.author == Identity("discord", str(USER_ID))  # a DM's author has no roles


def test_thread_is_its_own_conversation(state: Any, guild: discord.Guild) -> None:
    message = _read(state, guild, _mentioning_bot("hi", channel_id=THREAD_ID))

    assert _incoming(message).key == ConversationKey("discord", str(CHANNEL_ID), str(THREAD_ID))


def test_reply_to_the_bot_needs_the_content_intent(state: Any, guild: discord.Guild) -> None:
    earlier = payloads.message_create("an earlier answer", author=payloads.bot_user())
    message = _read(state, guild, payloads.message_create("and then?", replying_to=earlier))

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


def test_thread_of_a_listed_channel_counts_as_listed(state: Any, guild: discord.Guild) -> None:
    general_listed = TriggerPolicy(BOT_ID, frozenset({str(CHANNEL_ID)}))
    message = _read(state, guild, payloads.message_create("anyone?", channel_id=THREAD_ID))
    assert trigger(message, general_listed) is Trigger.CHANNEL


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


def test_prompt_text_keeps_code_that_only_looks_like_a_mention() -> None:
    content = f"{mention()}\n```py\nprint('<@123>')\n```"  # not a snowflake: no mention Discord would make
    assert prompt_text(content, BOT_ID) == "```py\nprint('<@123>')\n```"


def test_mentions_become_names_and_never_ids(state: Any, guild: discord.Guild) -> None:
    bob = payloads.user(1400000000000000099, "bob") | {"member": payloads.member(payloads.user()) | {"nick": "Bobby"}}
    unknown_user, unknown_role, unknown_channel = 1400000000000000077, 1500000000000000077, 1300000000000000077
    content = (
        f"{mention()} ask {mention(1400000000000000099)} and <@{unknown_user}>, ping <@&{ADMIN_ROLE_ID}> "
        f"or <@&{unknown_role}> in <#{LISTED_CHANNEL_ID}> or <#{unknown_channel}>"
    )
    payload = payloads.message_create(content, mentions=(payloads.bot_user(), bob))
    payload["mention_roles"] = [str(ADMIN_ROLE_ID)]
    text = _incoming(_read(state, guild, payload)).text

    assert text == "ask @Bobby and @someone, ping @bot-admins or @someone in #ask-the-bot or #channel"


def test_prompt_text_resolves_from_the_names_given() -> None:
    names = Names(users={1400000000000000099: "Bob"}, roles={}, channels={CHANNEL_ID: "general"})
    content = f"<@!1400000000000000099> in <#{CHANNEL_ID}>, not {mention()}"
    assert prompt_text(content, BOT_ID, names) == "@Bob in #general, not"
    # In a discussion read back the bot is one of the people talking: its mention stays, as a name.
    assert prompt_text(mention(), None, Names(users={BOT_ID: "Teambot"})) == "@Teambot"


def test_custom_emoji_and_command_mentions_become_names_without_ids() -> None:
    emoji_id, command_id = 1800000000000000001, 1800000000000000002
    content = (
        f"{mention()} <:shipit:{emoji_id}> and <a:party_parrot:{emoji_id}>! try </ask:{command_id}> "
        f"or </persona reset:{command_id}>; code stays: `</not a command>` <:too:short:1>"
    )
    text = prompt_text(content, BOT_ID)
    assert text == (
        ":shipit: and :party_parrot:! try /ask or /persona reset; code stays: `</not a command>` <:too:short:1>"
    )
    assert str(emoji_id) not in text and str(command_id) not in text


def test_identity_carries_the_display_name(state: Any, guild: discord.Guild) -> None:
    nicknamed = _mentioning_bot("hi")
    nicknamed["member"]["nick"] = "Ali"
    assert _incoming(_read(state, guild, nicknamed)).author.name == "Ali"
    in_dm = payloads.message_create("hi", channel_id=DM_CHANNEL_ID, in_guild=False)
    assert _incoming(_read(state, guild, in_dm)).author.name == "Alice"  # the global display name
    command = discord.Interaction(data=payloads.interaction_create("ask"), state=state)  # type: ignore[arg-type]
    assert command_incoming(command, "ask", "hi").author.name == "Alice"


def _with_file(payload: payloads.Payload, name: str, size: int, content_type: str | None) -> payloads.Payload:
    url = f"http://127.0.0.1:9/attachments/1/{name}"
    file = {"id": str(payloads.new_id()), "filename": name, "size": size, "url": url, "proxy_url": url}
    payload["attachments"].append(file | ({"content_type": content_type} if content_type else {}))
    return payload


def test_attachments_are_handed_on_with_their_name_size_and_type(state: Any, guild: discord.Guild) -> None:
    payload = _with_file(_mentioning_bot(""), "notes.txt", 12, "text/plain; charset=utf-8")
    _with_file(payload, "blob", 3, None)
    files = _incoming(_read(state, guild, payload)).attachments

    assert [(f.name, f.size, f.content_type) for f in files] == [
        ("notes.txt", 12, "text/plain; charset=utf-8"),
        ("blob", 3, None),
    ]


def test_a_file_alone_is_a_question_in_a_listed_channel(state: Any, guild: discord.Guild) -> None:
    payload = _with_file(payloads.message_create("", channel_id=LISTED_CHANNEL_ID), "log.txt", 5, "text/plain")
    assert _incoming(_read(state, guild, payload)).text == ""


def test_said_names_the_author_and_the_files(state: Any, guild: discord.Guild) -> None:
    carol = payloads.user(1400000000000000055, "carol")
    payload = _with_file(payloads.message_create(f"see {mention()}", author=carol), "trace.log", 9, None)
    payload["mentions"] = [payloads.bot_user()]
    assert said(_read(state, guild, payload)) == Said("Carol", "see @Teambot\n[shared files: trace.log]")


def test_interaction_keys_and_identities(state: Any, guild: discord.Guild) -> None:
    in_channel = discord.Interaction(data=payloads.interaction_create("reset"), state=state)  # type: ignore[arg-type]
    in_thread = discord.Interaction(
        data=payloads.interaction_create("reset", channel=payloads.thread_channel()),  # type: ignore[arg-type]
        state=state,
    )
    in_dm = discord.Interaction(
        data=payloads.interaction_create("reset", channel=payloads.dm_channel(), in_guild=False),  # type: ignore[arg-type]
        state=state,
    )
    assert command_incoming(in_channel, "reset", "") == Incoming(
        ConversationKey("discord", str(CHANNEL_ID)), Identity("discord", str(USER_ID)), "", command="reset"
    )
    assert command_incoming(in_thread, "ask", "hi").key == ConversationKey("discord", str(CHANNEL_ID), str(THREAD_ID))
    assert command_incoming(in_dm, "stats", "").key == ConversationKey("discord", str(DM_CHANNEL_ID))
    as_admin = payloads.interaction_create(
        "export", invoker=payloads.user(ADMIN_USER_ID, "root"), roles=(ADMIN_ROLE_ID,)
    )
    admin = discord.Interaction(data=as_admin, state=state)  # type: ignore[arg-type]
    assert command_incoming(admin, "export", "int8").author == Identity(
        "discord", str(ADMIN_USER_ID), frozenset({str(ADMIN_ROLE_ID)})
    )


def test_outgoing_text_never_pings() -> None:
    params = handle_message_parameters(content="@everyone <@&1> <@2> hi", allowed_mentions=NO_MENTIONS)
    assert params.payload is not None and params.payload["allowed_mentions"] == {"parse": []}


def test_notice_is_subtext_and_other_kinds_are_unchanged() -> None:
    assert render("Your message was cut.", Kind.NOTICE) == "-# Your message was cut."
    assert all(render("**hi**", kind) == "**hi**" for kind in (Kind.REPLY, Kind.INFO, Kind.PRIVATE))


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


@pytest.mark.parametrize(
    "fields",
    [
        {"message_limit": 31},
        {"message_limit": 2001},
        {"edits_per_second": 0.0},
        {"edit_interval_s": -1.0},
        {"catchup_max_messages": 0},
        {"catchup_max_messages": 1001},
    ],
)
def test_config_rejects_unusable_limits(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        DiscordConfig(token="t", **fields)


def test_config_never_shows_the_token() -> None:
    assert "secret-token" not in repr(DiscordConfig(token="secret-token"))
