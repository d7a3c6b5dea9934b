"""Slack's assistant view end to end: the real Bolt app and the real bundled model behind the local stand-in."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from adapters.memory import MemoryAdapter
from adapters.slack import people
from adapters.slack.assistant_surface import (
    FEEDBACK_ACTION,
    HELPFUL,
    THINKING,
    AssistantSurface,
    NativeStreaming,
    to_markdown,
)
from adapters.slack.connection import web_client
from adapters.slack.mrkdwn import to_mrkdwn
from bot.lineup import in_line_text
from bot.manager import ConversationManager
from bot.surface import UNPACED, Kind
from tests.slack.assistant_api import AssistantApi, feedback_click, thread_started
from tests.slack.conftest import DM, USER, running_slack, slack_config, slack_core
from tests.slack.standin import SlackStandIn, message_event

SURFACE_LOG = "adapters.slack.assistant_surface"

GREETING = "Hi! I answer <questions> & read files."
PROMPTS = ("What can you do?", "Explain a piece of code", "Draft a status update", "Summarize a text", "Fifth")
QUESTION = "What is the capital of France?"


@asynccontextmanager
async def assistant_app(
    manager: ConversationManager, prompts: tuple[str, ...] = PROMPTS
) -> AsyncIterator[tuple[SlackStandIn, AssistantApi]]:
    """The stand-in with the assistant methods, and the adapter running against it."""
    standin = SlackStandIn()
    api = AssistantApi(standin)
    async with standin:
        config = slack_config(standin, assistant_greeting=GREETING, suggested_prompts=prompts)
        async with running_slack(slack_core(manager), config):
            yield standin, api


@pytest.fixture
async def assistant(manager: ConversationManager) -> AsyncIterator[tuple[SlackStandIn, AssistantApi]]:
    async with assistant_app(manager) as running:
        yield running


async def ask(slack: SlackStandIn, text: str, thread: str) -> str:
    """The user writes ``text`` in the assistant thread ``thread``; return the envelope id."""
    event = message_event(text, channel=DM, user=USER, ts=slack.next_ts(), thread_ts=thread, channel_type="im")
    return await slack.send_event(event)


def is_feedback(blocks: list[dict[str, Any]]) -> bool:
    """Whether ``blocks`` end with the helpful / not helpful buttons."""
    element = blocks[-1]["elements"][0] if blocks and blocks[-1]["type"] == "context_actions" else {}
    return element.get("type") == "feedback_buttons" and element.get("action_id") == FEEDBACK_ACTION


@pytest.mark.model
@pytest.mark.parametrize("prompts", [PROMPTS, ()], ids=["five prompts", "none"])
async def test_a_new_thread_gets_the_greeting_and_at_most_four_suggested_prompts(
    manager: ConversationManager, prompts: tuple[str, ...]
) -> None:
    async with assistant_app(manager, prompts) as (slack, api):
        thread = slack.next_ts()
        envelope = await slack.send_event(thread_started(USER, DM, thread))

        greeting = await slack.wait_replies(DM, thread)
        await slack.wait_ack(envelope)  # the listener has run to its end

        assert greeting[0].text == "Hi! I answer &lt;questions&gt; &amp; read files."
        sent = [prompt["message"] for prompt in api.prompts.get((DM, thread), [])]
        assert sent == list(prompts[:4])
        assert all(prompt["title"] for prompt in api.prompts.get((DM, thread), []))


@pytest.mark.model
async def test_a_question_streams_natively_with_status_title_and_feedback_that_stats_counts(
    assistant: tuple[SlackStandIn, AssistantApi], bot: MemoryAdapter
) -> None:
    slack, api = assistant
    expected = to_markdown(await bot.say(QUESTION))
    thread = slack.next_ts()
    await ask(slack, QUESTION, thread)

    reply = await slack.wait_text(DM, thread, expected)
    await slack.wait_for(lambda: api.final_blocks.get(reply.ts))

    assert "Paris" in reply.text
    assert api.statuses[0] == (DM, thread, THINKING)
    assert api.titles[DM, thread] == QUESTION
    assert slack.calls_of("chat.appendStream"), "the reply was sent whole instead of streamed"
    assert [call.params["ts"] for call in slack.calls_of("chat.stopStream")] == [reply.ts]
    assert not slack.calls_of("chat.postMessage") and not slack.calls_of("chat.update")
    assert is_feedback(api.final_blocks[reply.ts])

    await slack.wait_ack(await slack.send_interactive(feedback_click(USER, DM, thread, reply.ts, HELPFUL)))
    await ask(slack, "/stats", thread)

    stats = await slack.wait_for(lambda: next((m for m in slack.thread(DM, thread) if "Feedback" in m.text), None))
    assert "Feedback on replies here: 1 helpful, 0 not helpful." in stats.text


@pytest.mark.model
async def test_a_refused_stream_falls_back_to_posting_and_updating(
    assistant: tuple[SlackStandIn, AssistantApi], bot: MemoryAdapter, caplog: pytest.LogCaptureFixture
) -> None:
    slack, api = assistant
    api.refusal = "feature_not_enabled"
    expected = to_mrkdwn(await bot.say(QUESTION))
    thread = slack.next_ts()
    with caplog.at_level(logging.WARNING, logger="adapters.slack.assistant_surface"):
        await ask(slack, QUESTION, thread)
        reply = await slack.wait_text(DM, thread, expected)
        final = await slack.wait_for(
            lambda: next((c for c in slack.calls_of("chat.update") if c.params.get("blocks")), None)
        )

    assert len(slack.calls_of("chat.startStream")) == 1
    assert [call.params["thread_ts"] for call in slack.calls_of("chat.postMessage")] == [thread]
    assert len(reply.texts) >= 2, "the fallback did not stream"
    assert final.params["ts"] == reply.ts
    assert is_feedback(final.params["blocks"])
    assert "feature_not_enabled" in caplog.text


async def test_an_edit_that_does_not_extend_the_stream_stops_it_and_updates_the_message() -> None:
    standin = SlackStandIn()
    api = AssistantApi(standin)
    async with standin:
        thread = standin.next_ts()
        client = web_client(slack_config(standin))
        surface = AssistantSurface(client, DM, thread, UNPACED, recipient=(None, USER), native=NativeStreaming())

        handle = await surface.send(in_line_text(0), Kind.REPLY)  # the core's place in line, then the reply over it
        await surface.edit(handle, "Paris", Kind.REPLY)
        await surface.edit(handle, "Paris is the capital.", Kind.REPLY)
        await surface.finish(complete=True)

    (message,) = standin.thread(DM, thread)
    # Streamed, then replaced twice by chat.update, then once more with the buttons under the same text.
    assert message.texts == [to_markdown(in_line_text(0)), "Paris", *["Paris is the capital."] * 2]
    assert api.final_blocks == {message.ts: []}, "the stream was stopped without buttons before the update"
    (*_, last) = standin.calls_of("chat.update")
    assert is_feedback(last.params["blocks"])
    assert last.params["blocks"][0]["text"]["text"] == "Paris is the capital."


def surface_over(standin: SlackStandIn) -> tuple[AssistantSurface, str]:
    """An assistant surface in a new thread of the stand-in's DM, and that thread's ts."""
    thread = standin.next_ts()
    client = web_client(slack_config(standin))
    return AssistantSurface(client, DM, thread, UNPACED, recipient=(None, USER), native=NativeStreaming()), thread


async def edit_as_the_core_does(surface: AssistantSurface, handle: object, text: str) -> Exception | None:
    """Edit as the core's live messages do: an error is noted (and returned) and the next edit goes on."""
    try:
        await surface.edit(handle, text, Kind.REPLY)
    except Exception as error:
        return error
    return None


async def test_a_refused_append_goes_on_with_chat_update_and_never_shows_text_twice(
    caplog: pytest.LogCaptureFixture,
) -> None:
    standin = SlackStandIn()
    api = AssistantApi(standin)
    async with standin:
        surface, thread = surface_over(standin)
        handle = await surface.send("Paris", Kind.REPLY)
        api.refuse("chat.appendStream", "streaming_state_conflict")
        with caplog.at_level(logging.WARNING, logger=SURFACE_LOG):
            errors = [await edit_as_the_core_does(surface, handle, t) for t in ("Paris is", "Paris is the capital.")]
            await surface.finish(complete=True)

    (message,) = standin.thread(DM, thread)
    assert errors == [None, None]
    assert message.text == "Paris is the capital."
    assert all(message.text.startswith(text) for text in message.texts), f"text shown twice: {message.texts}"
    assert list(api.final_blocks) == [message.ts], "the refused stream was stopped"
    (*_, last) = standin.calls_of("chat.update")
    assert is_feedback(last.params["blocks"]) and last.params["blocks"][0]["text"]["text"] == message.text
    assert "streaming_state_conflict" in caplog.text


async def test_a_stream_that_will_not_stop_is_logged_and_the_next_part_still_posts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    standin = SlackStandIn()
    api = AssistantApi(standin)
    async with standin:
        surface, thread = surface_over(standin)
        await surface.send("Part one", Kind.REPLY)
        api.refuse("chat.stopStream", "internal_error", times=2)
        with caplog.at_level(logging.WARNING, logger=SURFACE_LOG):
            second = await surface.send("Part two", Kind.REPLY)  # stops part one's stream first
            await surface.edit(second, "Part two, longer", Kind.REPLY)
            await surface.finish(complete=True)  # stops part two's

    assert [message.text for message in standin.thread(DM, thread)] == ["Part one", "Part two, longer"]
    assert len(standin.calls_of("chat.stopStream")) == 2
    assert caplog.text.count("chat.stopStream (internal_error)") == 2


SLOW_USER, SLOW_DM = "USLOW0001", "DSLOWBOT1"


class HeldNames(SlackStandIn):
    """The stand-in, where users.info about ``SLOW_USER`` waits for ``release``: a lookup Slack is slow to answer."""

    def __init__(self) -> None:
        super().__init__()
        self.asked, self.release = asyncio.Event(), asyncio.Event()

    async def _api(self, request: web.Request) -> web.Response:
        if request.match_info["method"] == "users.info" and request.query.get("user") == SLOW_USER:
            self.asked.set()
            await self.release.wait()
        return await super()._api(request)


@pytest.mark.model
async def test_a_slow_name_lookup_holds_up_its_own_assistant_thread_only(
    manager: ConversationManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(people, "LOOKUP_TIMEOUT_S", 60.0)  # the held lookup never gives up during the test
    standin = HeldNames()
    AssistantApi(standin)
    async with standin, running_slack(slack_core(manager), slack_config(standin)):
        slow_thread, quick_thread = standin.next_ts(), standin.next_ts()
        slow_event = message_event(
            "/help", channel=SLOW_DM, user=SLOW_USER, ts=standin.next_ts(), thread_ts=slow_thread, channel_type="im"
        )
        slow = await standin.send_event(slow_event)
        await asyncio.wait_for(standin.asked.wait(), 20)
        quick = await ask(standin, "/help", quick_thread)

        await standin.wait_ack(quick)  # before: every assistant thread waited for the slow lookup
        assert slow not in standin.acks
        standin.release.set()
        await standin.wait_ack(slow)
        await standin.wait_replies(SLOW_DM, slow_thread)
        await standin.wait_replies(DM, quick_thread)
