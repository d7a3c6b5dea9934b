"""Starting, reconnecting and stopping the Slack adapter."""

from __future__ import annotations

import asyncio
import logging

import pytest

from adapters.memory import MemoryAdapter
from adapters.slack import SlackAdapter, SlackStartupError
from adapters.slack.mrkdwn import to_mrkdwn
from bot.manager import ConversationManager
from bot.types import ConversationKey
from tests.slack.conftest import CHANNEL, USER, running_slack, slack_config, slack_core, start_slack
from tests.slack.standin import APP_TOKEN, BOT_TOKEN, BOT_USER_ID, SlackStandIn, message_event

pytestmark = pytest.mark.model

QUESTION = "What is the capital of France?"


def mention(slack: SlackStandIn, text: str = QUESTION) -> tuple[str, dict[str, object]]:
    ts = slack.next_ts()
    return ts, message_event(f"<@{BOT_USER_ID}> {text}", channel=CHANNEL, user=USER, ts=ts, kind="app_mention")


async def test_stop_finishes_the_reply_in_flight_then_closes_the_socket(
    manager: ConversationManager, standin: SlackStandIn, bot: MemoryAdapter
) -> None:
    expected = to_mrkdwn(await bot.say(QUESTION))
    running = await start_slack(slack_core(manager), slack_config(standin))
    ts, event = mention(standin)
    await standin.send_event(event)
    await standin.wait_replies(CHANNEL, ts)

    running.stop.set()
    await asyncio.wait_for(running.task, timeout=30)

    assert standin.thread(CHANNEL, ts)[0].text == expected
    await standin.wait_for(lambda: True if not standin.socket_open else None, limit_s=5)


async def test_stop_cancels_replies_that_outlast_the_grace_period(
    manager: ConversationManager, standin: SlackStandIn
) -> None:
    running = await start_slack(slack_core(manager, stop_grace_s=0.0), slack_config(standin))
    ts, event = mention(standin, "Write a long story about a dragon.")
    await standin.send_event(event)
    await standin.wait_replies(CHANNEL, ts)

    running.stop.set()
    await asyncio.wait_for(running.task, timeout=10)

    # The cancelled reply released its conversation: the next one starts at once.
    follow_up = manager.reply(ConversationKey("slack", CHANNEL, ts), "Hello?")
    assert await asyncio.wait_for(follow_up.complete(), timeout=30)


async def test_reconnects_when_slack_asks_and_keeps_answering(
    manager: ConversationManager, standin: SlackStandIn
) -> None:
    async with running_slack(slack_core(manager), slack_config(standin)):
        await standin.send_disconnect()
        await standin.wait_for(lambda: True if standin.sockets_opened == 2 else None)
        ts, event = mention(standin)
        await standin.send_event(event)
        await standin.wait_replies(CHANNEL, ts)

    assert len(standin.calls_of("apps.connections.open")) == 2


async def test_a_rejected_bot_token_stops_startup_with_a_clear_error(
    manager: ConversationManager, standin: SlackStandIn
) -> None:
    adapter = SlackAdapter(slack_config(standin, bot_token="xoxb-wrong-token"))
    with pytest.raises(SlackStartupError, match="SLACK_BOT_TOKEN: invalid_auth") as error:
        await adapter.serve(slack_core(manager), asyncio.Event())
    assert "xoxb-wrong-token" not in str(error.value)
    assert not adapter.ready.is_set()


async def test_a_rejected_app_token_stops_startup_with_a_clear_error(
    manager: ConversationManager, standin: SlackStandIn
) -> None:
    adapter = SlackAdapter(slack_config(standin, app_token="xapp-wrong-token"))
    with pytest.raises(SlackStartupError, match="SLACK_APP_TOKEN: invalid_auth"):
        await adapter.serve(slack_core(manager), asyncio.Event())
    assert not standin.socket_open


async def test_no_token_reaches_the_logs(
    manager: ConversationManager, standin: SlackStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        async with running_slack(slack_core(manager), slack_config(standin)):
            ts, event = mention(standin)
            await standin.send_event(event)
            await standin.wait_replies(CHANNEL, ts)

    assert caplog.records
    for record in caplog.records:
        assert BOT_TOKEN not in record.getMessage()
        assert APP_TOKEN not in record.getMessage()


async def test_events_arriving_while_the_core_stops_are_left_unacknowledged(
    manager: ConversationManager, standin: SlackStandIn
) -> None:
    core = slack_core(manager)
    async with running_slack(core, slack_config(standin)):
        ts, event = mention(standin)
        await standin.send_event(event)
        await standin.wait_replies(CHANNEL, ts)
        stopping = asyncio.ensure_future(core.drain())  # as when another adapter's stop began
        late_ts, late = mention(standin, "Are you there?")
        envelope = await standin.send_event(late)
        await asyncio.sleep(1.0)

        # Unacknowledged, Slack delivers it again later, to a bot that can answer it.
        assert envelope not in standin.acks
        await stopping
    assert not standin.thread(CHANNEL, late_ts)
    assert len(standin.thread(CHANNEL, ts)) == 1
