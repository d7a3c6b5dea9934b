"""End to end over Socket Mode: the real Bolt app and the real bundled model behind the local Slack stand-in."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest

from adapters.memory import MemoryAdapter
from adapters.slack.mrkdwn import to_mrkdwn
from bot.manager import CUT_NOTICE, ConversationConfig, ConversationManager
from bot.store import MemoryHistoryStore
from model.openvino_engine import OpenVINOEngine
from model.slot import EngineSlot
from tests.slack.conftest import CHANNEL, DM, USER, WATCHED, running_slack, slack_config, slack_core
from tests.slack.standin import BOT_ID, BOT_USER_ID, SlackStandIn, message_event

pytestmark = pytest.mark.model

MENTION = f"<@{BOT_USER_ID}>"


async def expected_reply(bot: MemoryAdapter, question: str) -> str:
    """What the bot must show for ``question``: the model's greedy answer, converted to mrkdwn."""
    return to_mrkdwn(await bot.say(question))


async def assert_answered_once(slack: SlackStandIn, channel: str, ts: str) -> None:
    """A follow-up /reset in the thread waits for every reply queued before it and counts the turns."""
    await slack.send_event(message_event("/reset", channel=channel, user=USER, ts=slack.next_ts(), thread_ts=ts))

    def reset_answer() -> str | None:
        return next((m.text for m in slack.thread(channel, ts) if m.text.startswith("Conversation forgotten")), None)

    assert await slack.wait_for(reset_answer) == "Conversation forgotten (2 messages)."
    assert len(slack.thread(channel, ts)) == 2  # one answer, then the /reset confirmation


async def test_app_mention_answered_in_its_thread_with_a_streamed_reply(
    slack: SlackStandIn, bot: MemoryAdapter
) -> None:
    question = "What is the capital of France?"
    expected = await expected_reply(bot, question)
    ts = slack.next_ts()
    envelope = await slack.send_event(
        message_event(f"{MENTION} {question}", channel=CHANNEL, user=USER, ts=ts, kind="app_mention")
    )

    reply = await slack.wait_text(CHANNEL, ts, expected)

    assert await slack.wait_ack(envelope)
    assert "Paris" in reply.text
    assert len(reply.texts) >= 2, "the reply was posted whole instead of streamed"
    assert len(reply.texts[0]) < len(reply.text)
    posts = [call for call in slack.calls_of("chat.postMessage") if call.params.get("thread_ts") == ts]
    assert len(posts) == 1
    updates = [call for call in slack.calls_of("chat.update") if call.params.get("ts") == reply.ts]
    assert len(updates) == len(reply.texts) - 1
    assert updates[-1].params["text"] == expected


async def test_model_output_is_escaped(slack: SlackStandIn, bot: MemoryAdapter) -> None:
    question = "Write the HTML tag for a line break."
    raw = await bot.say(question)
    assert "<" in raw, "precondition: the model writes markup for this question"
    ts = slack.next_ts()
    await slack.send_event(
        message_event(f"{MENTION} {question}", channel=CHANNEL, user=USER, ts=ts, kind="app_mention")
    )

    reply = await slack.wait_text(CHANNEL, ts, to_mrkdwn(raw))

    for text in reply.texts:
        assert "<" not in text
    assert "&lt;" in reply.text


async def test_a_retried_event_is_answered_once(slack: SlackStandIn) -> None:
    ts = slack.next_ts()
    mention = message_event(f"{MENTION} Name a color.", channel=CHANNEL, user=USER, ts=ts, kind="app_mention")
    await slack.wait_ack(await slack.send_event(mention, event_id="EvRETRY1"))
    await slack.wait_ack(await slack.send_event(mention, event_id="EvRETRY1", retry_attempt=1))
    await slack.wait_ack(await slack.send_event(mention, event_id="EvRETRY1", retry_attempt=2))

    await assert_answered_once(slack, CHANNEL, ts)


async def test_a_message_delivered_as_mention_and_message_is_answered_once(slack: SlackStandIn) -> None:
    ts = slack.next_ts()
    text = f"{MENTION} Name a fruit."
    await slack.send_event(message_event(text, channel=WATCHED, user=USER, ts=ts))
    await slack.send_event(message_event(text, channel=WATCHED, user=USER, ts=ts, kind="app_mention"))

    await assert_answered_once(slack, WATCHED, ts)


async def test_a_rate_limited_post_is_retried_after_retry_after(slack: SlackStandIn, bot: MemoryAdapter) -> None:
    question = "What is the capital of France?"
    expected = await expected_reply(bot, question)
    slack.fail_next("chat.postMessage", retry_after=1)
    ts = slack.next_ts()
    await slack.send_event(
        message_event(f"{MENTION} {question}", channel=CHANNEL, user=USER, ts=ts, kind="app_mention")
    )

    await slack.wait_text(CHANNEL, ts, expected)

    limited, retried = slack.calls_of("chat.postMessage")[:2]
    assert (limited.status, retried.status) == (429, 200)
    assert limited.params == retried.params
    assert retried.at - limited.at >= 0.9
    assert len(slack.thread(CHANNEL, ts)) == 1


async def test_a_direct_message_is_answered(slack: SlackStandIn, bot: MemoryAdapter) -> None:
    question = "What is the capital of France?"
    expected = await expected_reply(bot, question)
    ts = slack.next_ts()
    await slack.send_event(message_event(question, channel=DM, user=USER, ts=ts, channel_type="im"))

    reply = await slack.wait_text(DM, ts, expected)

    assert reply.thread_ts == ts


async def test_bots_own_and_unaddressed_messages_are_ignored(slack: SlackStandIn) -> None:
    ignored = [
        message_event("chatter", channel=CHANNEL, user=USER, ts=slack.next_ts()),
        message_event(f"{MENTION} from a bot", channel=WATCHED, user="UOTHER01", ts=slack.next_ts(), bot_id="B2"),
        message_event("my own words", channel=WATCHED, user=BOT_USER_ID, ts=slack.next_ts(), bot_id=BOT_ID),
        message_event("edited", channel=WATCHED, user=USER, ts=slack.next_ts(), subtype="message_changed"),
    ]
    for event in ignored:
        await slack.wait_ack(await slack.send_event(event))
    ts = slack.next_ts()
    await slack.send_event(message_event("Say hello.", channel=DM, user=USER, ts=ts, channel_type="im"))

    await slack.wait_replies(DM, ts)

    assert [m.channel for m in slack.messages.values()] == [DM]


async def test_text_commands_work_in_a_thread(slack: SlackStandIn) -> None:
    ts = slack.next_ts()
    await slack.send_event(message_event(f"{MENTION} /help", channel=CHANNEL, user=USER, ts=ts, kind="app_mention"))

    reply = (await slack.wait_replies(CHANNEL, ts))[0]

    assert "/reset" in reply.text and "/stats" in reply.text


async def test_non_admin_export_is_refused_and_logged(slack: SlackStandIn, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="bot.audit"):
        await slack.wait_ack(await slack.send_command("/export", "int4", user=USER, channel=CHANNEL))
        refusal = await slack.wait_response(lambda response: "admin" in response["text"])

    assert refusal.get("response_type") != "in_channel"  # only the asker sees it
    assert any("export" in r.getMessage() and USER in r.getMessage() for r in caplog.records)
    assert not slack.calls_of("chat.postMessage")


class NarrowWindow:
    """The real engine, declaring a 256-token context so that a long message gets cut (and says so)."""

    def __init__(self, engine: OpenVINOEngine) -> None:
        self._engine = engine
        self.info = dataclasses.replace(engine.info, context_size=256)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


async def test_notices_are_shown_in_the_thread(engine: OpenVINOEngine, standin: SlackStandIn) -> None:
    manager = ConversationManager(
        EngineSlot(NarrowWindow(engine)),
        MemoryHistoryStore(),
        ConversationConfig(system_prompt="", max_new_tokens=16),
    )
    ts = standin.next_ts()
    long_message = "Summarize: " + "the quick brown fox jumps over the lazy dog. " * 60
    async with running_slack(slack_core(manager), slack_config(standin)):
        await standin.send_event(message_event(long_message, channel=DM, user=USER, ts=ts, channel_type="im"))
        replies = await standin.wait_replies(DM, ts, count=2)

    assert replies[1].text == f"_{CUT_NOTICE}_"
