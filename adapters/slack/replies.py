"""Posting into Slack threads: command answers, streamed model replies, notices.

The pacing and splitting of streamed replies is the core's (``bot.streaming``); this
module only says how a Slack message is posted and edited.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable, Coroutine
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.mrkdwn import escape, to_mrkdwn
from bot.commands import HELP_TEXT, dispatch
from bot.manager import ConversationManager, Reply
from bot.streaming import EditBudget, stream_to_sink
from bot.types import ConversationKey

log = logging.getLogger(__name__)

FAILURE_TEXT = "Sorry, something went wrong while answering. Please try again."


class SlackSink:
    """The messages of one reply in a Slack channel or thread (a ``MessageSink[str]`` of message ts)."""

    def __init__(
        self,
        client: AsyncWebClient,
        channel: str,
        thread_ts: str | None,
        render: Callable[[str], str] = to_mrkdwn,
    ) -> None:
        self._client = client
        self._channel = channel
        self._thread_ts = thread_ts
        self._render = render

    async def send(self, text: str) -> str:
        """Post a new message; return its ts."""
        response = await self._client.chat_postMessage(
            channel=self._channel,
            thread_ts=self._thread_ts,
            text=self._render(text),
            unfurl_links=False,
            unfurl_media=False,
        )
        # Slack answers with the channel id even when it was addressed another way.
        self._channel = str(response.get("channel") or self._channel)
        return str(response["ts"])

    async def edit(self, handle: str, text: str) -> None:
        """Replace a posted message's text."""
        await self._client.chat_update(channel=self._channel, ts=handle, text=self._render(text))


class InFlight:
    """The replies being written, so that stopping can finish or cancel them."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``work`` in the background and keep track of it."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def __len__(self) -> int:
        return len(self._tasks)

    async def drain(self, grace_s: float) -> None:
        """Wait up to ``grace_s`` for the work in flight, then cancel what is left."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
        for task in pending:
            task.cancel()
        if pending:
            log.info("Cancelled %d Slack replies still in flight", len(pending))
            await asyncio.gather(*pending, return_exceptions=True)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("A Slack reply failed", exc_info=task.exception())


class Replier:
    """Answers messages in Slack threads with the conversation core."""

    def __init__(self, manager: ConversationManager, client: AsyncWebClient, budget: EditBudget, limit: int) -> None:
        self._manager = manager
        self._client = client
        self._budget = budget
        self._limit = limit

    async def post(self, channel: str, thread_ts: str | None, mrkdwn: str) -> str:
        """Post one message (already mrkdwn) and return its ts."""
        return await SlackSink(self._client, channel, thread_ts, render=str).send(mrkdwn)

    async def answer(self, channel: str, thread_ts: str, key: ConversationKey, text: str) -> None:
        """Answer ``text`` in a thread: a command's answer or a streamed reply, then any notices."""
        try:
            result = await dispatch(self._manager, key, text) if text else HELP_TEXT
        except Exception:
            log.exception("Failed to answer in %s", key)
            await self._apologize(channel, thread_ts)
            return
        await self.deliver(channel, thread_ts, result)

    async def deliver(self, channel: str, thread_ts: str, result: str | Reply) -> None:
        """Show a command's answer, or stream a reply and then its notices, in a thread."""
        try:
            if isinstance(result, str):
                await self.post(channel, thread_ts, escape(result))
                return
            await self._stream(result, SlackSink(self._client, channel, thread_ts))
            for notice in result.notices:
                await self.post(channel, thread_ts, f"_{escape(notice)}_")
        except SlackApiError as error:
            log.warning("Slack refused a reply in %s: %s", channel, error.response.get("error"))
        except Exception:
            log.exception("Failed to answer in %s", channel)
            await self._apologize(channel, thread_ts)

    async def show_lines(self, channel: str, thread_ts: str | None, lines: AsyncIterable[str]) -> None:
        """Show plain-text lines as they come, in one message edited under the shared budget."""
        sink = SlackSink(self._client, channel, thread_ts, render=escape)
        await stream_to_sink(_joined(lines), sink, self._budget, self._limit)

    async def _stream(self, reply: Reply, sink: SlackSink) -> None:
        chunks = reply.__aiter__()
        try:
            await stream_to_sink(chunks, sink, self._budget, self._limit)
        finally:
            # Stops generation when the stream was cut short (an error or shutdown).
            if isinstance(chunks, AsyncGenerator):
                await chunks.aclose()

    async def _apologize(self, channel: str, thread_ts: str) -> None:
        try:
            await self.post(channel, thread_ts, FAILURE_TEXT)
        except SlackApiError as error:
            log.warning("Could not tell %s about the failure: %s", channel, error.response.get("error"))


async def _joined(lines: AsyncIterable[str]) -> AsyncIterator[str]:
    separator = ""
    async for line in lines:
        yield separator + line
        separator = "\n"


async def queued_lines(queue: asyncio.Queue[str | None]) -> AsyncIterator[str]:
    """The lines put on ``queue`` until ``None``."""
    while (line := await queue.get()) is not None:
        yield line
