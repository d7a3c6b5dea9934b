"""Posting streamed replies on Discord: message sinks, the typing indicator, replies in flight."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import discord

from adapters.discord.translate import NO_MENTIONS, notice_text
from bot.manager import Reply
from bot.streaming import EditBudget, MessageSink, stream_to_sink

log = logging.getLogger(__name__)

H = TypeVar("H")


class ChannelSink:
    """Posts a reply in a channel, DM or thread; the first part answers the user's message."""

    def __init__(self, channel: discord.abc.Messageable, reply_to: discord.Message | None = None) -> None:
        self._channel = channel
        self._reply_to = reply_to

    async def send(self, text: str) -> discord.Message:
        reference = self._reply_to.to_reference(fail_if_not_exists=False) if self._reply_to else None
        self._reply_to = None  # only the first part is shown as a reply
        if reference is None:
            return await self._channel.send(text, allowed_mentions=NO_MENTIONS)
        return await self._channel.send(text, allowed_mentions=NO_MENTIONS, reference=reference)

    async def edit(self, handle: discord.Message, text: str) -> None:
        await handle.edit(content=text, allowed_mentions=NO_MENTIONS)


class FollowupSink:
    """Posts a reply as follow-ups of a deferred slash command."""

    def __init__(self, interaction: discord.Interaction[discord.Client]) -> None:
        self._followup = interaction.followup

    async def send(self, text: str) -> discord.WebhookMessage:
        return await self._followup.send(text, wait=True, allowed_mentions=NO_MENTIONS)

    async def edit(self, handle: discord.WebhookMessage, text: str) -> None:
        await handle.edit(content=text, allowed_mentions=NO_MENTIONS)


async def _chain(first: str, rest: AsyncIterator[str]) -> AsyncIterator[str]:
    yield first
    async for chunk in rest:
        yield chunk


async def deliver(
    reply: Reply,
    sink: MessageSink[H],
    budget: EditBudget,
    limit: int,
    waiting: Callable[[], AbstractAsyncContextManager[Any]] = contextlib.nullcontext,
) -> list[H]:
    """Stream ``reply`` into ``sink``, then post its notices; return the reply's message handles.

    ``waiting`` (the typing indicator) is held while the reply queues and prefills,
    that is until the first chunk exists.  Leaving early (an error or cancellation)
    closes the reply, which stops generation.
    """
    chunks = cast(AsyncGenerator[str, None], reply.__aiter__())
    async with contextlib.aclosing(chunks):
        async with contextlib.AsyncExitStack() as typing:
            try:
                await typing.enter_async_context(waiting())
            except discord.HTTPException as error:  # cosmetic: answer without the indicator
                log.warning("No typing indicator (%s); answering anyway", error)
            first = await anext(chunks, "")
        handles = await stream_to_sink(_chain(first, chunks), sink, budget, limit)
    for notice in reply.notices:
        await sink.send(notice_text(notice))
    return handles


class InFlight:
    """The tasks answering right now, so a stop can let them finish or cancel them."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        """Count the current task as answering until the block ends."""
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - always inside a task under asyncio
            yield
            return
        self._tasks.add(task)
        try:
            yield
        finally:
            self._tasks.discard(task)

    async def drain(self, grace_s: float) -> int:
        """Wait up to ``grace_s`` for answers to finish, cancel the rest; return how many were cancelled."""
        tasks = set(self._tasks)
        if not tasks:
            return 0
        _, pending = await asyncio.wait(tasks, timeout=grace_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        return len(pending)


@dataclass
class Answering:
    """What every answer on one Discord connection shares."""

    budget: EditBudget  # one budget for all replies in flight: Discord rate-limits the bot as a whole
    limit: int
    inflight: InFlight = field(default_factory=InFlight)
    stopping: bool = False

    async def stream(
        self,
        reply: Reply,
        sink: MessageSink[H],
        waiting: Callable[[], AbstractAsyncContextManager[Any]] = contextlib.nullcontext,
    ) -> list[H]:
        """``deliver`` with this connection's budget and limit."""
        return await deliver(reply, sink, self.budget, self.limit, waiting)
