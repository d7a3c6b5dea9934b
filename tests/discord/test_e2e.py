"""End to end: the real discord.py client on the local stand-in, answering with the real bundled model."""

from __future__ import annotations

import asyncio
import logging

import pytest

from adapters.discord import DiscordAdapter, DiscordConfig, DiscordStartError
from bot.admin import ProgressCallback
from bot.commands import HELP_TEXT, NOT_ADMIN, format_stats
from bot.manager import ConversationManager
from bot.store import MemoryHistoryStore
from bot.streaming import split_message
from bot.types import ConversationKey
from tests.conftest import TEST_MAX_NEW_TOKENS, make_core
from tests.discord import payloads
from tests.discord.conftest import StartBot, answer_in, answered
from tests.discord.payloads import (
    ADMIN_ROLE_ID,
    ADMIN_USER_ID,
    APP_ID,
    CHANNEL_ID,
    DM_CHANNEL_ID,
    LISTED_CHANNEL_ID,
    MESSAGE_CONTENT_INTENT,
    OTHER_BOT_ID,
    THREAD_ID,
    TOKEN,
    WEBHOOK_ID,
    mention,
)
from tests.discord.standin import DiscordStandIn, Posted

pytestmark = pytest.mark.model

NO_PINGS: dict[str, list[str]] = {"parse": []}
CHANNEL_KEY = ConversationKey("discord", str(CHANNEL_ID))
THREAD_KEY = ConversationKey("discord", str(CHANNEL_ID), str(THREAD_ID))
CAPITAL = "What is the capital of France?"


def _ask(content: str, **fields: object) -> payloads.Payload:
    return payloads.message_create(f"{mention()} {content}", mentions=(payloads.bot_user(),), **fields)  # type: ignore[arg-type]


async def _answered(standin: DiscordStandIn, message_id: str, answer: str, limit: int = 2000) -> list[Posted]:
    """The bot's messages answering ``message_id`` once they hold exactly ``answer`` split at ``limit``."""
    return await answered(standin, message_id, split_message(answer, limit))


async def test_mention_is_answered_with_a_streamed_reply(
    standin: DiscordStandIn,
    start_bot: StartBot,
    chat_manager: ConversationManager,
    history: MemoryHistoryStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="adapters.discord")
    bot = await start_bot()
    question = _ask(CAPITAL)
    await standin.dispatch("MESSAGE_CREATE", question)

    answer = await answer_in(standin, chat_manager, history, CHANNEL_KEY)
    (reply,) = await _answered(standin, question["id"], answer)

    assert "Paris" in answer
    assert len(reply.contents) >= 2, "the reply should be posted early, then edited"
    assert reply.contents[0] != answer and answer.startswith(reply.contents[0])
    assert all(body["allowed_mentions"] == NO_PINGS for body in reply.bodies)
    typing = standin.matching("POST", f"/channels/{CHANNEL_ID}/typing")
    first_post = standin.matching("POST", f"/channels/{CHANNEL_ID}/messages")[0]
    assert typing and standin.requests.index(typing[0]) < standin.requests.index(first_post)
    # Discord's permission bits: SEND_MESSAGES 1<<11, READ_MESSAGE_HISTORY 1<<16, SEND_MESSAGES_IN_THREADS 1<<38.
    permissions = (1 << 11) | (1 << 16) | (1 << 38)
    assert f"scope=bot+applications.commands&permissions={permissions}" in caplog.text
    # The gateway address came from GET /gateway/bot; the stream was compressed as discord.py asked
    # (zlib-stream, or zstd-stream where a zstd module is installed).
    assert standin.matching("GET", "/gateway/bot") and bot.session.path == "/gateway"
    assert bot.session.compression in ("zlib-stream", "zstd-stream")


async def test_long_reply_continues_in_further_messages(
    standin: DiscordStandIn, start_bot: StartBot, chat_manager: ConversationManager, history: MemoryHistoryStore
) -> None:
    limit = 64  # a small limit stands in for Discord's 2000 so a short generation still splits
    await start_bot(message_limit=limit)
    question = _ask("Tell me a short story about a cat.")
    await standin.dispatch("MESSAGE_CREATE", question)

    answer = await answer_in(standin, chat_manager, history, CHANNEL_KEY)
    parts = await _answered(standin, question["id"], answer, limit)

    assert len(answer) > limit and len(parts) >= 2
    assert all(len(part.content) <= limit for part in parts)
    assert all(body["allowed_mentions"] == NO_PINGS for part in parts for body in part.bodies)


async def test_bots_webhooks_and_itself_are_ignored(
    standin: DiscordStandIn, start_bot: StartBot, chat_manager: ConversationManager, history: MemoryHistoryStore
) -> None:
    await start_bot(channels=frozenset({str(LISTED_CHANNEL_ID)}))
    ignored = [
        _ask("from another bot", author=payloads.user(OTHER_BOT_ID, "otherbot", bot=True)),
        _ask("from a webhook", author=payloads.user(WEBHOOK_ID, "hook", bot=True), webhook_id=WEBHOOK_ID),
        _ask("from myself", author=payloads.bot_user()),
        payloads.message_create("no mention, not a listed channel"),
    ]
    for message in ignored:
        await standin.dispatch("MESSAGE_CREATE", message)
    # A human in a listed channel, without a mention, is answered: messages are handled in order.
    sentinel = payloads.message_create(CAPITAL, channel_id=LISTED_CHANNEL_ID)
    await standin.dispatch("MESSAGE_CREATE", sentinel)

    listed_key = ConversationKey("discord", str(LISTED_CHANNEL_ID))
    answer = await answer_in(standin, chat_manager, history, listed_key)
    await _answered(standin, sentinel["id"], answer)

    assert [m.channel_id for m in standin.posted] == [str(LISTED_CHANNEL_ID)]
    assert await history.history(CHANNEL_KEY, 10) == []


async def test_reply_to_the_bot_continues_the_conversation(
    standin: DiscordStandIn, start_bot: StartBot, chat_manager: ConversationManager, history: MemoryHistoryStore
) -> None:
    await start_bot()
    earlier = payloads.message_create("Paris is the capital of France.", author=payloads.bot_user())
    follow_up = payloads.message_create("And of Italy?", replying_to=earlier)
    await standin.dispatch("MESSAGE_CREATE", follow_up)

    answer = await answer_in(standin, chat_manager, history, CHANNEL_KEY)
    await _answered(standin, follow_up["id"], answer)
    assert (await history.history(CHANNEL_KEY, 10))[0].content == "And of Italy?"


async def test_direct_message_is_answered(
    standin: DiscordStandIn, start_bot: StartBot, chat_manager: ConversationManager, history: MemoryHistoryStore
) -> None:
    await start_bot()
    question = payloads.message_create(CAPITAL, channel_id=DM_CHANNEL_ID, in_guild=False)
    await standin.dispatch("MESSAGE_CREATE", question)

    answer = await answer_in(standin, chat_manager, history, ConversationKey("discord", str(DM_CHANNEL_ID)))
    (reply,) = await _answered(standin, question["id"], answer)
    assert reply.channel_id == str(DM_CHANNEL_ID) and "Paris" in answer


async def test_thread_keeps_its_own_memory(
    standin: DiscordStandIn, start_bot: StartBot, chat_manager: ConversationManager, history: MemoryHistoryStore
) -> None:
    await start_bot()
    in_channel, in_thread = _ask(CAPITAL), _ask("Name a colour.", channel_id=THREAD_ID)
    await standin.dispatch("MESSAGE_CREATE", in_channel)
    await standin.dispatch("MESSAGE_CREATE", in_thread)
    await _answered(standin, in_thread["id"], await answer_in(standin, chat_manager, history, THREAD_KEY))
    await _answered(standin, in_channel["id"], await answer_in(standin, chat_manager, history, CHANNEL_KEY))

    reset = payloads.interaction_create("reset", channel=payloads.thread_channel())
    await standin.dispatch("INTERACTION_CREATE", reset)
    followups = await standin.wait_for(lambda: standin.matching("POST", f"/webhooks/{APP_ID}/{reset['token']}"))

    assert followups[0].body["content"] == "Conversation forgotten (2 messages)."
    assert [m.channel_id for m in standin.replies_to(in_thread["id"])] == [str(THREAD_ID)]
    assert (await history.history(CHANNEL_KEY, 10))[0].content == CAPITAL
    assert await history.history(THREAD_KEY, 10) == []


async def test_ask_command_defers_then_streams_the_follow_up(
    standin: DiscordStandIn, start_bot: StartBot, chat_manager: ConversationManager, history: MemoryHistoryStore
) -> None:
    await start_bot()
    ask = payloads.interaction_create("ask", {"prompt": CAPITAL})
    await standin.dispatch("INTERACTION_CREATE", ask)
    answer = await answer_in(standin, chat_manager, history, CHANNEL_KEY)
    webhook = f"/webhooks/{APP_ID}/{ask['token']}"
    await standin.wait_for(lambda: any(m.content == answer for m in standin.in_channel(CHANNEL_ID)))

    callback = standin.matching("POST", f"/interactions/{ask['id']}/{ask['token']}/callback")
    assert [request.body["type"] for request in callback] == [5]  # deferred: "thinking" within 3 s
    (followup,) = [m for m in standin.in_channel(CHANNEL_ID) if m.content == answer]
    assert standin.matching("POST", webhook) and standin.matching("PATCH", f"{webhook}/messages/{followup.id}")
    assert all(body["allowed_mentions"] == NO_PINGS for body in followup.bodies)

    stats = payloads.interaction_create("stats")
    await standin.dispatch("INTERACTION_CREATE", stats)
    (response,) = await standin.wait_for(lambda: standin.matching("POST", f"/interactions/{stats['id']}/"))
    # The first line is the reply's speed; the channel's persona and feedback follow.
    assert response.body["data"]["content"].splitlines()[0] == format_stats(
        chat_manager.last_stats(CHANNEL_KEY), chat_manager.model_name
    )


async def test_ask_then_a_message_are_answered_in_arrival_order(
    standin: DiscordStandIn, start_bot: StartBot, history: MemoryHistoryStore
) -> None:
    await start_bot()
    ask = payloads.interaction_create("ask", {"prompt": CAPITAL})
    message = _ask("Name a colour.")
    await standin.dispatch("INTERACTION_CREATE", ask)  # its deferral is a network call...
    await standin.dispatch("MESSAGE_CREATE", message)  # ...that this later message must not overtake
    await standin.wait_for(lambda: len(history._turns.get(CHANNEL_KEY, [])) >= 4 or None)
    questions = [m.content for m in await history.history(CHANNEL_KEY, 10) if m.role == "user"]
    assert questions == [CAPITAL, "Name a colour."]


class RecordingActions:
    """Stands in for the export service: records who asked, reports progress, returns an outcome."""

    def __init__(self, outcome: str = "Export finished.") -> None:
        self.calls: list[tuple[str, str]] = []
        self._outcome = outcome

    async def export(self, requested_by: str, argument: str, progress: ProgressCallback) -> str:
        self.calls.append((requested_by, argument))
        await progress("Exporting…")
        return self._outcome


async def test_export_is_refused_to_non_admins_and_run_for_admins(
    standin: DiscordStandIn, start_bot: StartBot, caplog: pytest.LogCaptureFixture
) -> None:
    actions = RecordingActions()
    await start_bot(actions=actions, admin_ids=[str(ADMIN_ROLE_ID)])
    refused = payloads.interaction_create("export", {"argument": "int4"})
    await standin.dispatch("INTERACTION_CREATE", refused)
    (answer,) = await standin.wait_for(lambda: standin.matching("POST", f"/interactions/{refused['id']}/"))

    assert answer.body["type"] == 4 and answer.body["data"]["content"] == NOT_ADMIN.format(command="export")
    assert answer.body["data"]["flags"] == 64 and answer.body["data"]["allowed_mentions"] == NO_PINGS
    assert any(r.name == "bot.audit" and "export" in r.getMessage() for r in caplog.records)

    # The admin role (not @everyone, whose id is the server's) makes the user an admin.
    allowed = payloads.interaction_create(
        "export", {"argument": "int8"}, invoker=payloads.user(ADMIN_USER_ID, "root"), roles=(ADMIN_ROLE_ID,)
    )
    await standin.dispatch("INTERACTION_CREATE", allowed)
    webhook = f"/webhooks/{APP_ID}/{allowed['token']}"
    await standin.wait_for(lambda: len(standin.matching("POST", webhook)) == 2)
    (deferred,) = standin.matching("POST", f"/interactions/{allowed['id']}/")
    progress, outcome = standin.matching("POST", webhook)

    assert actions.calls == [(f"discord:{ADMIN_USER_ID}", "int8")]
    assert deferred.body["type"] == 5 and deferred.body["data"]["flags"] == 64  # "thinking", for the admin only
    assert progress.body["content"] == "Exporting…" and progress.body["flags"] == 64
    # The outcome is a message of its own, for the admin only too.
    assert outcome.body["content"] == "Export finished." and outcome.body["flags"] == 64


async def test_bare_mention_is_answered_with_help(standin: DiscordStandIn, start_bot: StartBot) -> None:
    await start_bot()
    question = payloads.message_create(mention(), mentions=(payloads.bot_user(),))
    await standin.dispatch("MESSAGE_CREATE", question)
    (reply,) = await standin.wait_for(lambda: standin.replies_to(question["id"]))
    assert reply.contents == [HELP_TEXT] and reply.bodies[0]["allowed_mentions"] == NO_PINGS


async def test_without_message_content_intent_only_mentions_are_answered(
    standin: DiscordStandIn,
    start_bot: StartBot,
    chat_manager: ConversationManager,
    history: MemoryHistoryStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    standin.app_flags = 0  # the developer portal's Message Content toggle is off
    bot = await start_bot(channels=frozenset({str(LISTED_CHANNEL_ID)}))
    await standin.dispatch("MESSAGE_CREATE", payloads.message_create(CAPITAL, channel_id=LISTED_CHANNEL_ID))
    question = _ask(CAPITAL)
    await standin.dispatch("MESSAGE_CREATE", question)
    await _answered(standin, question["id"], await answer_in(standin, chat_manager, history, CHANNEL_KEY))

    assert bot.session.identify is not None and not bot.session.identify["intents"] & MESSAGE_CONTENT_INTENT
    assert "mentions and DMs only" in caplog.text
    assert [m.channel_id for m in standin.posted] == [str(CHANNEL_ID)]


async def test_stop_lets_the_reply_finish_then_closes_the_gateway(
    standin: DiscordStandIn, start_bot: StartBot, chat_manager: ConversationManager, history: MemoryHistoryStore
) -> None:
    bot = await start_bot()
    question = _ask(CAPITAL)
    await standin.dispatch("MESSAGE_CREATE", question)
    await standin.wait_for(lambda: standin.replies_to(question["id"]))
    await bot.stopped()

    answer = (await history.history(CHANNEL_KEY, 10))[-1].content
    assert [m.content for m in standin.replies_to(question["id"])] == [answer]
    assert standin.sessions == [] and standin.closed_sessions[-1][1] == 1000


async def test_stop_without_grace_cancels_the_reply(
    standin: DiscordStandIn, start_bot: StartBot, chat_manager: ConversationManager
) -> None:
    bot = await start_bot(stop_grace_s=0.0)
    question = _ask("Write a long poem about the sea.")
    await standin.dispatch("MESSAGE_CREATE", question)
    await standin.wait_for(lambda: standin.replies_to(question["id"]))
    await bot.stopped(seconds=10)

    stats = chat_manager.last_stats(CHANNEL_KEY)  # a stopped reply still reports what it generated
    assert stats is not None and stats.generated_tokens < TEST_MAX_NEW_TOKENS, "generation should have been stopped"
    assert standin.sessions == []
    # The engine is free again: the next reply is generated in full.
    after = await asyncio.wait_for(chat_manager.reply(ConversationKey("discord", "after"), CAPITAL).complete(), 60)
    assert "Paris" in after


async def test_explicit_gateway_url_is_used(standin: DiscordStandIn, start_bot: StartBot) -> None:
    bot = await start_bot(gateway_url=standin.gateway_url("/alt-gateway"))
    assert bot.session.path == "/alt-gateway"
    assert not standin.matching("GET", "/gateway/bot")


async def test_rejected_token_is_a_clear_start_error(
    standin: DiscordStandIn, chat_manager: ConversationManager
) -> None:
    adapter = DiscordAdapter(DiscordConfig(token="not-" + TOKEN, api_base=standin.api_base))
    with pytest.raises(DiscordStartError, match="DISCORD_TOKEN was rejected"):
        await asyncio.wait_for(adapter.serve(make_core(chat_manager), asyncio.Event()), 30)
    assert standin.sessions == []


async def test_refused_intent_at_the_gateway_is_a_clear_error(
    standin: DiscordStandIn, chat_manager: ConversationManager
) -> None:
    standin.gateway_denies_content = True
    adapter = DiscordAdapter(DiscordConfig(token=TOKEN, api_base=standin.api_base))
    with pytest.raises(DiscordStartError, match="Message Content Intent"):
        await asyncio.wait_for(adapter.serve(make_core(chat_manager), asyncio.Event()), 30)
    refused, _ = standin.closed_sessions[-1]
    assert refused.identify is not None and refused.identify["intents"] & MESSAGE_CONTENT_INTENT
    assert standin.sessions == []
