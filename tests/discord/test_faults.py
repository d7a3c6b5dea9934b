"""Discord's REST API failing on the way: every reply still arrives once and whole.

discord.py retries a 429 (after ``retry_after``) and 500/502/504/524 by itself; the
adapter (``adapters/discord/endpoints.py``) retries what it leaves: other 5xx (503) and
a dropped connection.  Creating a message again after its connection dropped is safe
only because discord.py sends a nonce Discord enforces: the stand-in enforces it too,
so a create the server carried out before the drop is not posted twice.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from discord.errors import DiscordServerError
from discord.http import Route

from adapters.discord import endpoints
from bot.commands import FAILED
from bot.manager import ConversationManager
from bot.store import MemoryHistoryStore
from bot.types import ConversationKey
from tests.discord import payloads
from tests.discord.conftest import StartBot, answer_in
from tests.discord.payloads import CHANNEL_ID, mention
from tests.discord.standin import DiscordStandIn, Fault, Posted, Recorded

pytestmark = pytest.mark.model

CHANNEL_KEY = ConversationKey("discord", str(CHANNEL_ID))
QUESTION = "What is the capital of France?"
FAULTS = [
    pytest.param(Fault.RATE_LIMITED, 429, id="429"),
    pytest.param(Fault.SERVER_ERROR, 500, id="500"),  # discord.py's own retry
    pytest.param(Fault.SERVER_ERROR, 503, id="503"),  # the adapter's retry
    pytest.param(Fault.DROPPED, 0, id="dropped"),
    pytest.param(Fault.DROPPED_AFTER, 0, id="dropped-after-done"),
]


async def ask(standin: DiscordStandIn) -> payloads.Payload:
    """Mention the bot with ``QUESTION`` in #general; return the message."""
    question = payloads.message_create(f"{mention()} {QUESTION}", mentions=(payloads.bot_user(),))
    await standin.dispatch("MESSAGE_CREATE", question)
    return question


def retries_of(standin: DiscordStandIn, failed: Recorded) -> list[Recorded]:
    """Requests after ``failed`` that repeat it (same route, path and body: a created message's nonce too)."""
    later = standin.requests[standin.requests.index(failed) + 1 :]
    return [r for r in later if (r.route, r.path, r.body) == (failed.route, failed.path, failed.body)]


@pytest.mark.parametrize("route", ["create_message", "edit_message"])
@pytest.mark.parametrize(("fault", "status"), FAULTS)
async def test_a_failed_call_is_retried_and_the_reply_arrives_once(
    standin: DiscordStandIn,
    start_bot: StartBot,
    chat_manager: ConversationManager,
    history: MemoryHistoryStore,
    route: str,
    fault: Fault,
    status: int,
) -> None:
    await start_bot()
    standin.fail(route, fault, status=status)

    question = await ask(standin)
    answer = await answer_in(standin, chat_manager, history, CHANNEL_KEY)
    replies = await standin.wait_for(lambda: _once(standin.replies_to(question["id"]), answer))

    assert [reply.content for reply in replies] == [answer]
    assert len(standin.in_channel(CHANNEL_ID)) == 1, "a message was posted twice"
    ((failed, seen),) = standin.failed
    assert (failed.route, seen) == (route, fault)
    # A call dropped after the server carried it out may already show the answer: its repeat comes after a backoff.
    assert await standin.wait_for(lambda: retries_of(standin, failed) or None), "the failed call was not repeated"
    if route == "create_message":
        assert failed.body["enforce_nonce"] and failed.body["nonce"]
    assert standin.call_counts()[route] == len([r for r in standin.requests if r.route == route])


def _once(replies: list[Posted], answer: str) -> list[Posted] | None:
    return replies if [reply.content for reply in replies] == [answer] else None


async def test_edits_failing_for_good_still_deliver_the_whole_reply(
    standin: DiscordStandIn,
    start_bot: StartBot,
    chat_manager: ConversationManager,
    history: MemoryHistoryStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await start_bot()
    standin.fail("edit_message", Fault.SERVER_ERROR, times=None, status=503)

    with caplog.at_level(logging.WARNING):
        await ask(standin)
        answer = await answer_in(standin, chat_manager, history, CHANNEL_KEY)
        await standin.wait_for(lambda: [m for m in standin.in_channel(CHANNEL_ID) if m.content == answer], 90)

    messages = standin.in_channel(CHANNEL_ID)
    assert messages[-1].content == answer  # posted anew once it could not be edited in
    assert all(len(message.contents) == 1 for message in messages), "an edit got through"
    assert not any(FAILED in message.content for message in messages), "the user was told of a failure"
    assert "retrying" in caplog.text and "posting it anew" in caplog.text


class FailingRequest:
    """discord.py's request function, failing with ``errors`` in turn, then answering ``{}`` (pure logic)."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self, route: Route, **kwargs: Any) -> Any:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return {}


def server_error(status: int) -> DiscordServerError:
    response = SimpleNamespace(status=status, reason="Server error")
    return DiscordServerError(response, {"message": "Server error", "code": 0})  # type: ignore[arg-type]


DROPPED = aiohttp.ServerDisconnectedError()
CREATE = Route("POST", "/channels/{channel_id}/messages", channel_id=1)
EDIT = Route("PATCH", "/channels/{channel_id}/messages/{message_id}", channel_id=1, message_id=2)


@pytest.mark.parametrize(
    ("route", "body", "error", "repeated"),
    [
        pytest.param(CREATE, {"content": "hi", "nonce": "7", "enforce_nonce": True}, DROPPED, True, id="nonce"),
        pytest.param(CREATE, {"content": "hi"}, DROPPED, False, id="no-nonce-could-post-twice"),
        pytest.param(EDIT, {"content": "hi"}, DROPPED, True, id="edit"),
        pytest.param(CREATE, {"content": "hi"}, server_error(503), True, id="503"),
        pytest.param(CREATE, {"content": "hi"}, server_error(500), False, id="500-already-retried-by-discord.py"),
    ],
)
async def test_what_the_adapter_repeats(
    monkeypatch: pytest.MonkeyPatch, route: Route, body: dict[str, Any], error: Exception, repeated: bool
) -> None:
    monkeypatch.setattr(endpoints, "BACKOFF_S", 0.0)
    request = FailingRequest(error)
    call = endpoints.retrying(request, server_errors=True)(route, json=body)
    if repeated:
        assert await call == {}
    else:
        with pytest.raises(type(error)):
            await call
    assert request.calls == (2 if repeated else 1)


async def test_retries_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(endpoints, "BACKOFF_S", 0.0)
    request = FailingRequest(*[aiohttp.ServerDisconnectedError() for _ in range(10)])
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await endpoints.retrying(request, server_errors=True)(EDIT, json={"content": "hi"})
    assert request.calls == endpoints.RETRIES + 1
