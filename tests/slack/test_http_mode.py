"""HTTP mode: Slack's signed requests reach the real Bolt app, which verifies every signature."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from slack_sdk.signature import SignatureVerifier

from adapters.memory import MemoryAdapter
from adapters.slack.mrkdwn import to_mrkdwn
from bot.core import Core
from bot.manager import ConversationManager
from entry.llama_server import free_port
from tests.slack.conftest import (
    CHANNEL,
    SIGNING_SECRET,
    USER,
    running_slack,
    slack_config,
    slack_core,
)
from tests.slack.standin import BOT_USER_ID, SlackStandIn, command_payload, event_payload, message_event

pytestmark = pytest.mark.model

STALE_S = 6 * 60  # Slack's window is 5 minutes


@dataclass
class Endpoint:
    """The bot's HTTP endpoint and a way to send it requests signed like Slack's."""

    url: str
    http: aiohttp.ClientSession
    standin: SlackStandIn
    core: Core

    async def post(
        self,
        body: str,
        content_type: str,
        *,
        secret: str = SIGNING_SECRET,
        age_s: int = 0,
        extra_headers: dict[str, str] | None = None,
    ) -> tuple[int, str]:
        timestamp = str(int(time.time()) - age_s)
        signature = SignatureVerifier(secret).generate_signature(timestamp=timestamp, body=body)
        assert signature is not None
        headers = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": timestamp,
            "X-Slack-Signature": signature,
            **(extra_headers or {}),
        }
        async with self.http.post(self.url, data=body.encode(), headers=headers) as response:
            return response.status, await response.text()

    async def command(self, command: str, text: str = "", **kwargs: Any) -> tuple[int, str]:
        payload = command_payload(command, text, user=USER, channel=CHANNEL, response_url=self.standin.response_url())
        return await self.post(urlencode(payload), "application/x-www-form-urlencoded", **kwargs)

    async def event(self, event: dict[str, Any], event_id: str, **headers: str) -> tuple[int, str]:
        body = json.dumps(event_payload(event, event_id))
        return await self.post(body, "application/json", extra_headers=headers)


@pytest.fixture
async def endpoint(manager: ConversationManager, standin: SlackStandIn) -> AsyncIterator[Endpoint]:
    port = free_port()
    config = slack_config(standin, mode="http", port=port, app_token=None)
    core = slack_core(manager)
    async with running_slack(core, config), aiohttp.ClientSession() as http:
        yield Endpoint(f"http://127.0.0.1:{port}/slack/events", http, standin, core)


async def test_a_signed_command_is_answered(endpoint: Endpoint, manager: ConversationManager) -> None:
    status, _ = await endpoint.command("/stats")

    assert status == 200
    await endpoint.standin.wait_response(lambda response: manager.model_name in response["text"])


async def test_a_bad_signature_is_rejected(endpoint: Endpoint) -> None:
    status, _ = await endpoint.command("/stats", secret="not-the-signing-secret")
    assert status == 401


async def test_a_request_older_than_five_minutes_is_rejected(endpoint: Endpoint) -> None:
    status, _ = await endpoint.command("/stats", age_s=STALE_S)
    assert status == 401


async def test_url_verification_is_answered(endpoint: Endpoint) -> None:
    body = json.dumps({"token": "legacy", "challenge": "c-123", "type": "url_verification"})
    status, text = await endpoint.post(body, "application/json")
    assert (status, json.loads(text)) == (200, {"challenge": "c-123"})


async def test_a_signed_mention_is_answered_once_despite_retries(endpoint: Endpoint, bot: MemoryAdapter) -> None:
    question = "What is the capital of France?"
    expected = to_mrkdwn(await bot.say(question))
    ts = endpoint.standin.next_ts()
    mention = message_event(f"<@{BOT_USER_ID}> {question}", channel=CHANNEL, user=USER, ts=ts, kind="app_mention")

    assert (await endpoint.event(mention, "EvHTTP1"))[0] == 200
    retry = await endpoint.event(mention, "EvHTTP1", **{"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "timeout"})
    assert retry[0] == 200
    await endpoint.standin.wait_text(CHANNEL, ts, expected)

    reset = message_event("/reset", channel=CHANNEL, user=USER, ts=endpoint.standin.next_ts(), thread_ts=ts)
    assert (await endpoint.event(reset, "EvHTTP2"))[0] == 200
    confirmation = await endpoint.standin.wait_replies(CHANNEL, ts, count=2)
    assert confirmation[1].text == "Conversation forgotten (2 messages)."


async def test_events_are_refused_with_503_once_the_core_stops(endpoint: Endpoint) -> None:
    await endpoint.core.drain()  # as when the bot's stop began (another adapter's, say)
    ts = endpoint.standin.next_ts()
    mention = message_event(f"<@{BOT_USER_ID}> Hello?", channel=CHANNEL, user=USER, ts=ts, kind="app_mention")

    status, _ = await endpoint.event(mention, "EvLATE1")

    # Unacknowledged, Slack delivers it again later, to a bot that can answer it.
    assert status == 503
    assert not endpoint.standin.calls_of("chat.postMessage")
