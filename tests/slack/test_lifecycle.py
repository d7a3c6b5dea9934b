"""Starting, reconnecting and stopping the Slack adapter."""

from __future__ import annotations

import asyncio
import logging

import pytest
from slack_bolt.request.async_request import AsyncBoltRequest

from adapters.memory import MemoryAdapter
from adapters.slack import SlackStartupError, serve
from adapters.slack.app import SlackBot, web_client
from adapters.slack.mrkdwn import to_mrkdwn
from adapters.slack.translate import thread_key
from bot.admin import NoAdminActions
from bot.manager import ConversationManager
from bot.settings import SettingsError
from tests.slack.conftest import CHANNEL, TEST_OPTIONS, USER, running_slack, slack_settings, start_slack
from tests.slack.standin import APP_TOKEN, BOT_TOKEN, BOT_USER_ID, SlackStandIn, event_payload, message_event

pytestmark = pytest.mark.model

QUESTION = "What is the capital of France?"


def mention(slack: SlackStandIn, text: str = QUESTION) -> tuple[str, dict[str, object]]:
    ts = slack.next_ts()
    return ts, message_event(f"<@{BOT_USER_ID}> {text}", channel=CHANNEL, user=USER, ts=ts, kind="app_mention")


async def test_stop_finishes_the_reply_in_flight_then_closes_the_socket(
    manager: ConversationManager, standin: SlackStandIn, bot: MemoryAdapter
) -> None:
    expected = to_mrkdwn(await bot.say(QUESTION))
    running = await start_slack(manager, slack_settings(standin))
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
    running = await start_slack(manager, slack_settings(standin), stop_grace_s=0.0)
    ts, event = mention(standin, "Write a long story about a dragon.")
    await standin.send_event(event)
    await standin.wait_replies(CHANNEL, ts)

    running.stop.set()
    await asyncio.wait_for(running.task, timeout=10)

    # The cancelled reply released its conversation: the next one starts at once.
    follow_up = manager.reply(thread_key(CHANNEL, ts), "Hello?")
    assert await asyncio.wait_for(follow_up.complete(), timeout=30)


async def test_reconnects_when_slack_asks_and_keeps_answering(
    manager: ConversationManager, standin: SlackStandIn
) -> None:
    async with running_slack(manager, slack_settings(standin)):
        await standin.send_disconnect()
        await standin.wait_for(lambda: True if standin.sockets_opened == 2 else None)
        ts, event = mention(standin)
        await standin.send_event(event)
        await standin.wait_replies(CHANNEL, ts)

    assert len(standin.calls_of("apps.connections.open")) == 2


async def test_a_rejected_bot_token_stops_startup_with_a_clear_error(
    manager: ConversationManager, standin: SlackStandIn
) -> None:
    settings = slack_settings(standin, slack_bot_token="xoxb-wrong-token")
    with pytest.raises(SlackStartupError, match="SLACK_BOT_TOKEN: invalid_auth") as error:
        await serve(manager, settings, NoAdminActions(), asyncio.Event(), TEST_OPTIONS)
    assert "xoxb-wrong-token" not in str(error.value)


async def test_a_rejected_app_token_stops_startup_with_a_clear_error(
    manager: ConversationManager, standin: SlackStandIn
) -> None:
    settings = slack_settings(standin, slack_app_token="xapp-wrong-token")
    with pytest.raises(SlackStartupError, match="SLACK_APP_TOKEN: invalid_auth"):
        await serve(manager, settings, NoAdminActions(), asyncio.Event(), TEST_OPTIONS)


@pytest.mark.parametrize(
    ("overrides", "missing"),
    [
        ({"slack_app_token": None}, "SLACK_APP_TOKEN"),
        ({"slack_mode": "http", "slack_signing_secret": None}, "SLACK_SIGNING_SECRET"),
        ({"slack_bot_token": None}, "SLACK_BOT_TOKEN"),
    ],
)
async def test_missing_settings_are_named(
    manager: ConversationManager, standin: SlackStandIn, overrides: dict[str, object], missing: str
) -> None:
    with pytest.raises(SettingsError, match=missing):
        await serve(manager, slack_settings(standin, **overrides), NoAdminActions(), asyncio.Event(), TEST_OPTIONS)
    assert not standin.calls


async def test_no_token_reaches_the_logs(
    manager: ConversationManager, standin: SlackStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        async with running_slack(manager, slack_settings(standin)):
            ts, event = mention(standin)
            await standin.send_event(event)
            await standin.wait_replies(CHANNEL, ts)

    assert caplog.records
    for record in caplog.records:
        assert BOT_TOKEN not in record.getMessage()
        assert APP_TOKEN not in record.getMessage()


async def test_events_arriving_while_stopping_are_left_unacknowledged(
    manager: ConversationManager, standin: SlackStandIn
) -> None:
    settings = slack_settings(standin)
    slack = SlackBot(manager, settings, NoAdminActions(), web_client(settings, TEST_OPTIONS), BOT_USER_ID, TEST_OPTIONS)
    app = slack.build_app()
    ts, event = mention(standin)

    slack.stopping = True
    refused = await app.async_dispatch(AsyncBoltRequest(mode="socket_mode", body=event_payload(event, "EvSTOP1")))
    slack.stopping = False
    accepted = await app.async_dispatch(AsyncBoltRequest(mode="socket_mode", body=event_payload(event, "EvSTOP2")))
    await standin.wait_replies(CHANNEL, ts)
    await slack.in_flight.drain(10)

    assert (refused.status, accepted.status) == (503, 200)
    assert len(standin.thread(CHANNEL, ts)) == 1
