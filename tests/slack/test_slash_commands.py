"""Slash commands over Socket Mode: acknowledged at once, answered in the channel's conversation.

The bot's own answers (usage, /stats, /reset, refusals, export progress) reach only the
asker, through the command's response_url; the model's answer to /ask is posted in a thread.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from adapters.memory import MemoryAdapter
from adapters.slack.mrkdwn import to_mrkdwn
from bot.admin import ProgressCallback
from bot.manager import ConversationManager
from tests.slack.conftest import ADMIN, CHANNEL, USER, running_slack, slack_config, slack_core
from tests.slack.standin import CLOSED_CHANNEL, Posted, SlackStandIn, message_event

pytestmark = pytest.mark.model

ACK_DEADLINE_S = 3.0


class ProgressingAdmin:
    """Admin actions whose export reports two progress lines (the real export is another issue's)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []

    async def export(self, requested_by: str, argument: str, progress: ProgressCallback) -> str:
        self.requests.append((requested_by, argument))
        await progress("converting <weights>")
        await progress("compressing & saving")
        return "Export finished."


async def timed_ack(
    slack: SlackStandIn, command: str, text: str, *, user: str = USER, channel: str = CHANNEL
) -> dict[str, Any]:
    started = time.monotonic()
    ack = await slack.wait_ack(await slack.send_command(command, text, user=user, channel=channel))
    assert time.monotonic() - started < ACK_DEADLINE_S
    return ack


def top_level(slack: SlackStandIn) -> Posted | None:
    """The first message the bot posted outside any thread."""
    return next((m for m in slack.messages.values() if m.thread_ts is None), None)


async def test_ask_posts_the_question_and_streams_the_answer_in_its_thread(
    slack: SlackStandIn, bot: MemoryAdapter
) -> None:
    # Slack sends mentions in command text as <!channel> and <@U…>; echoing them would notify, and the model
    # reads a name, never an id (here nobody the workspace knows: someone).
    expected = to_mrkdwn(await bot.say("@channel @someone What is the capital of France?"))

    await timed_ack(slack, "/ask", "<!channel> <@UOTHER01> What is the capital of France?")

    asked = await slack.wait_for(lambda: top_level(slack))
    assert asked.text == f"<@{USER}> asked: @channel @someone What is the capital of France?"
    reply = await slack.wait_text(CHANNEL, asked.ts, expected)
    assert len(reply.texts) >= 2


async def test_ask_conversation_continues_in_its_thread_and_stats_and_reset_apply_to_it(
    slack: SlackStandIn, bot: MemoryAdapter
) -> None:
    question = "What is the capital of France?"
    expected = to_mrkdwn(await bot.say(question))
    await timed_ack(slack, "/ask", question)
    asked = await slack.wait_for(lambda: top_level(slack))
    await slack.wait_text(CHANNEL, asked.ts, expected)

    await timed_ack(slack, "/stats", "")
    await slack.wait_response(lambda response: "Last reply" in response["text"])

    # A follow-up in the thread, without a mention, continues the same conversation.
    await slack.send_event(
        message_event("And of Italy?", channel=CHANNEL, user=USER, ts=slack.next_ts(), thread_ts=asked.ts)
    )
    await slack.wait_replies(CHANNEL, asked.ts, count=2)

    await timed_ack(slack, "/reset", "")
    response = await slack.wait_response(lambda response: response["text"].startswith("Conversation forgotten"))
    assert response["text"] == "Conversation forgotten (4 messages)."


async def test_ask_without_a_question_shows_usage(slack: SlackStandIn) -> None:
    await timed_ack(slack, "/ask", "  ")
    await slack.wait_response(lambda response: "Usage" in response["text"])
    assert not slack.calls_of("chat.postMessage")


async def test_ask_where_the_bot_cannot_post_says_so(slack: SlackStandIn) -> None:
    await timed_ack(slack, "/ask", "Hello?", channel=CLOSED_CHANNEL)
    await slack.wait_response(lambda response: "not_in_channel" in response["text"])


async def test_stats_before_any_reply_names_the_model(slack: SlackStandIn, manager: ConversationManager) -> None:
    await timed_ack(slack, "/stats", "")
    response = await slack.wait_response(lambda response: manager.model_name in response["text"])
    assert "No reply" in response["text"]


async def test_admin_export_shows_progress_to_the_admin(manager: ConversationManager, standin: SlackStandIn) -> None:
    admin = ProgressingAdmin()
    async with running_slack(slack_core(manager, admin), slack_config(standin)):
        await timed_ack(standin, "/export", "int4", user=ADMIN)
        await standin.wait_response(lambda response: response["text"] == "Export finished.")

    assert admin.requests == [(f"slack:{ADMIN}", "int4")]
    first, *updates, outcome = standin.responses
    assert first["text"] == "converting &lt;weights&gt;"
    assert updates and all(update.get("replace_original") for update in updates)
    assert updates[-1]["text"] == "converting &lt;weights&gt;\ncompressing &amp; saving"
    assert not outcome.get("replace_original") and outcome["response_type"] == "ephemeral"
    assert not standin.calls_of("chat.postMessage")  # progress is for the admin only


async def test_non_admin_export_never_reaches_the_admin_actions(
    manager: ConversationManager, standin: SlackStandIn
) -> None:
    admin = ProgressingAdmin()
    async with running_slack(slack_core(manager, admin), slack_config(standin)):
        await timed_ack(standin, "/export", "int4", user=USER)
        await standin.wait_response(lambda response: "Only the bot's admins" in response["text"])

    assert admin.requests == []


async def test_reset_right_after_ask_waits_for_that_answer(slack: SlackStandIn) -> None:
    # Sent back to back: the question is in line first, so the reset must forget its answer too.
    await slack.send_command("/ask", "What is the capital of France?", user=USER, channel=CHANNEL)
    await slack.send_command("/reset", "", user=USER, channel=CHANNEL)
    response = await slack.wait_response(
        lambda response: response["text"].startswith("Conversation forgotten"), limit_s=60
    )
    assert response["text"] == "Conversation forgotten (2 messages)."
