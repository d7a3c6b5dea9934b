"""An assistant thread on Slack: the model's reply streams natively, with a status while it thinks and feedback buttons.

Slack's chat streaming (``chat.startStream`` / ``appendStream`` / ``stopStream``) only ever
appends, so a reply streams natively while each edit extends what is shown; anything else
(the core's in-line message replaced by the reply, a split that moved) stops the stream and
goes on with ``chat.update``.  Where Slack refuses to stream, replies go out as in any
thread (``chat.postMessage`` + ``chat.update``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.models.blocks import (
    Block,
    ContextActionsBlock,
    FeedbackButtonObject,
    FeedbackButtonsElement,
    MarkdownTextObject,
    SectionBlock,
)
from slack_sdk.web.async_chat_stream import AsyncChatStream
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.mrkdwn import escape
from adapters.slack.surfaces import ThreadSurface, render
from bot.streaming import split_message
from bot.surface import Kind, Pacing

log = logging.getLogger(__name__)

THINKING = "is thinking…"
# The feedback buttons under a complete answer: the action a click arrives as, and what each button says.
FEEDBACK_ACTION = "reply_feedback"
HELPFUL, UNHELPFUL = "helpful", "unhelpful"
# A section block's text holds at most 3000 characters.
SECTION_LIMIT = 3000
# Refusals that stay true for the workspace or the token: later replies do not ask again.
LASTING_REFUSALS = frozenset(
    {"not_allowed_token_type", "feature_not_enabled", "missing_scope", "not_authed", "unknown_method"}
)
# What a streaming call raises after the client's retries (SlackClientError: Slack's answer or the stream's state).
_STREAM_ERRORS = (SlackClientError, aiohttp.ClientError, TimeoutError)


def feedback_blocks() -> list[Block]:
    """The helpful / not helpful buttons under a complete answer."""
    buttons = FeedbackButtonsElement(
        action_id=FEEDBACK_ACTION,
        positive_button=FeedbackButtonObject(text="Helpful", value=HELPFUL, accessibility_label="This was helpful"),
        negative_button=FeedbackButtonObject(
            text="Not helpful", value=UNHELPFUL, accessibility_label="This was not helpful"
        ),
    )
    return [ContextActionsBlock(elements=[buttons])]


def to_markdown(text: str) -> str:
    """The model's Markdown for a chat stream (Slack renders it); ``&``, ``<``, ``>`` escaped so it never pings.

    Escaping works character by character, so the text of an edit that extends the reply
    extends what was streamed.
    """
    return escape(text)


class NativeStreaming:
    """Whether Slack takes chat streams from this app; shared by an adapter's assistant threads.

    The first refusal is logged once; a lasting one (the plan, the token) stops later replies from asking.
    """

    def __init__(self) -> None:
        self.available = True
        self._told = False

    def refused(self, error: Exception) -> None:
        """Note that ``chat.startStream`` failed with ``error`` (after the client's retries)."""
        reason = _reason(error)
        if reason in LASTING_REFUSALS:
            self.available = False
        if not self._told:
            self._told = True
            log.warning(
                "Slack refused chat.startStream (%s): assistant replies stream with chat.postMessage and chat.update",
                reason,
            )


@dataclass
class _Message:
    """One message of a reply: its ts, the text Slack shows, and its stream while one is open."""

    ts: str
    shown: str
    stream: AsyncChatStream | None = None


class AssistantSurface:
    """An assistant thread: replies stream natively where Slack allows it; other kinds post as in any thread."""

    def __init__(
        self,
        client: AsyncWebClient,
        channel: str,
        thread_ts: str,
        pacing: Pacing,
        *,
        recipient: tuple[str | None, str],
        native: NativeStreaming,
    ) -> None:
        self.pacing = pacing
        self.channel, self.thread_ts = channel, thread_ts
        self._client = client
        # Everything but a native stream goes out as in any thread.
        self._thread = ThreadSurface(client, channel, thread_ts, pacing)
        self._team, self._user = recipient
        self._native = native
        self._last: _Message | None = None  # the reply's latest message, which gets the feedback buttons
        self._posted = False
        # The first status and the first post take turns: a status set after the answer would stay on screen.
        self._turn = asyncio.Lock()

    def indicate(self, kind: Kind) -> AbstractAsyncContextManager[object]:
        """Show "is thinking…" under the thread (Slack clears it when the bot posts)."""
        return self._indicating()

    @contextlib.asynccontextmanager
    async def _indicating(self) -> AsyncIterator[None]:
        await self.show_status(THINKING)
        yield

    async def thinking(self) -> None:
        """Show the status as soon as a message arrives, unless something was posted for it already."""
        await self.show_status(THINKING, unless_posted=True)

    async def show_status(self, status: str, *, unless_posted: bool = False) -> None:
        """Set the thread's status; cosmetic, so a failure is logged and swallowed."""
        async with self._turn:
            if unless_posted and self._posted:
                return
            try:
                await self._client.assistant_threads_setStatus(
                    channel_id=self.channel, thread_ts=self.thread_ts, status=status
                )
            except Exception as error:
                log.warning("Could not set an assistant thread's status: %s", error)

    async def send(self, text: str, kind: Kind) -> object:
        """Post a message; the model's reply starts a stream (the previous part's stream ends first)."""
        async with self._turn:
            self._posted = True
            if kind is not Kind.REPLY:
                return await self._thread.send(text, kind)
            if self._last is not None and self._last.stream is not None:
                await self._stop(self._last)  # a failure is logged: the next part is posted all the same
            message = await self._start(text) if self._native.available else None
            if message is None:
                mrkdwn = render(text, kind)
                message = _Message(await self._thread.post(mrkdwn), mrkdwn)
            self._last = message
            return message

    async def edit(self, handle: object, text: str, kind: Kind) -> None:
        """Append what ``text`` adds to a streamed message; otherwise stop its stream and replace its text."""
        if not isinstance(handle, _Message):
            await self._thread.edit(handle, text, kind)
            return
        if handle.stream is not None:
            if await self._append(handle, to_markdown(text)):
                return
            # Not an extension, or Slack refused it: the message goes on with chat.update of the whole text.
            await self._stop(handle)
        shown = render(text, kind)
        await self._client.chat_update(channel=self.channel, ts=handle.ts, text=shown)
        handle.shown = shown

    async def _append(self, message: _Message, markdown: str) -> bool:
        """Stream what ``markdown`` adds to ``message``; ``False`` when it does not extend it or Slack refused it."""
        assert message.stream is not None, "appended to a message that does not stream"
        if not markdown.startswith(message.shown):
            return False
        if len(markdown) > len(message.shown):
            try:
                await message.stream.append(markdown_text=markdown[len(message.shown) :])
            except _STREAM_ERRORS as error:
                # slack_sdk keeps the refused text buffered: appending again would show it twice.
                log.warning("Slack refused chat.appendStream (%s): the reply goes on with chat.update", _reason(error))
                return False
        message.shown = markdown
        return True

    async def finish(self, *, complete: bool) -> None:
        """End the reply's stream; a complete answer gets the feedback buttons."""
        message, self._last = self._last, None
        if message is None:
            return
        blocks = feedback_blocks() if complete else None
        if message.stream is not None:
            await self._stop(message, blocks)
        elif blocks is not None:
            # A posted message shows blocks instead of its text, so the text moves into sections above the buttons.
            sections: list[Block] = [
                SectionBlock(text=MarkdownTextObject(text=part)) for part in split_message(message.shown, SECTION_LIMIT)
            ]
            await self._client.chat_update(
                channel=self.channel, ts=message.ts, text=message.shown, blocks=[*sections, *blocks]
            )

    async def _start(self, text: str) -> _Message | None:
        """Start a stream showing ``text``; ``None`` when Slack refuses (the reply then posts as in any thread)."""
        markdown = to_markdown(text)
        stream = await self._client.chat_stream(
            channel=self.channel,
            thread_ts=self.thread_ts,
            recipient_team_id=self._team,
            recipient_user_id=self._user,
            buffer_size=1,  # the core paces the edits already: each one goes out at once
        )
        try:
            await stream.append(markdown_text=markdown)
        except _STREAM_ERRORS as error:
            self._native.refused(error)
            return None
        assert stream.ts is not None, "a stream that started has a ts"
        return _Message(stream.ts, markdown, stream)

    async def _stop(self, message: _Message, blocks: list[Block] | None = None) -> None:
        """End ``message``'s stream; a failure is logged and swallowed (the text shown stays, later parts go on)."""
        stream, message.stream = message.stream, None
        assert stream is not None, "stopped a message that does not stream"
        try:
            await stream.stop(blocks=blocks)
        except _STREAM_ERRORS as error:
            log.warning("Could not stop a streamed reply with chat.stopStream (%s)", _reason(error))


def _reason(error: Exception) -> str:
    """A streaming call's failure in a few words: Slack's error code, else the kind (never a request's header)."""
    if isinstance(error, SlackApiError):
        return str(error.response.get("error"))
    return type(error).__name__
