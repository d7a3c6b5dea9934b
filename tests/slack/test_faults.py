"""Slack's Web API failing on the way: every reply still arrives once and whole, retried by the real client.

The real Bolt app on the real bundled model answers over Socket Mode while the stand-in
answers some ``chat.postMessage``/``chat.update`` calls with 429, 500, or drops them.
"""

from __future__ import annotations

import logging

import pytest

from adapters.memory import MemoryAdapter
from adapters.slack.mrkdwn import to_mrkdwn
from bot.commands import FAILED
from tests.slack.conftest import CHANNEL, USER
from tests.slack.standin import BOT_USER_ID, DROPPED_STATUS, Fault, SlackStandIn, message_event

pytestmark = pytest.mark.model

QUESTION = "What is the capital of France?"
STATUS = {Fault.RATE_LIMITED: 429, Fault.SERVER_ERROR: 500, Fault.DROPPED: DROPPED_STATUS}


async def ask(slack: SlackStandIn) -> str:
    """Mention the bot with ``QUESTION`` in ``CHANNEL``; return the thread's ts."""
    ts = slack.next_ts()
    text = f"<@{BOT_USER_ID}> {QUESTION}"
    await slack.send_event(message_event(text, channel=CHANNEL, user=USER, ts=ts, kind="app_mention"))
    return ts


@pytest.mark.parametrize("method", ["chat.postMessage", "chat.update"])
@pytest.mark.parametrize("fault", [Fault.RATE_LIMITED, Fault.SERVER_ERROR, Fault.DROPPED])
async def test_a_failed_call_is_retried_and_the_reply_arrives_once(
    slack: SlackStandIn, bot: MemoryAdapter, method: str, fault: Fault
) -> None:
    expected = to_mrkdwn(await bot.say(QUESTION))
    slack.fail(method, fault, retry_after=1)

    ts = await ask(slack)
    reply = await slack.wait_text(CHANNEL, ts, expected, limit_s=60)

    assert slack.thread(CHANNEL, ts) == [reply]  # one message, showing the whole reply
    calls = slack.calls_of(method)
    failed = [call for call in calls if call.status == STATUS[fault]]
    assert len(failed) == 1 and failed[0] is not calls[-1], "the failed call was not retried"
    retried = calls[calls.index(failed[0]) + 1]
    assert retried.status == 200
    assert retried.token == failed[0].token  # the same call again, authenticated the same way
    if fault is Fault.RATE_LIMITED:
        assert retried.at - failed[0].at >= 1.0, "Retry-After was not honoured"
    assert slack.call_counts()[method] == len(calls)


async def test_edits_failing_for_good_still_deliver_the_whole_reply(
    slack: SlackStandIn, bot: MemoryAdapter, caplog: pytest.LogCaptureFixture
) -> None:
    expected = to_mrkdwn(await bot.say(QUESTION))
    slack.fail("chat.update", Fault.SERVER_ERROR, times=None)

    with caplog.at_level(logging.WARNING, logger="bot.streaming"):
        ts = await ask(slack)
        await slack.wait_text(CHANNEL, ts, expected, limit_s=90)

    messages = slack.thread(CHANNEL, ts)
    assert messages[-1].text == expected  # the whole reply, posted anew when it could not be edited in
    assert all(message.texts == message.texts[:1] for message in messages), "an edit got through"
    assert not any(FAILED in message.text for message in messages), "the user was told of a failure"
    assert len(slack.calls_of("chat.update")) >= 2  # each failed edit was retried
    assert "posting it anew" in caplog.text
