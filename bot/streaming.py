"""Streaming a reply into chat messages: post early, edit under a rate budget, split long text.

Platforms differ only in how a message is posted and edited (a ``MessageSink``) and
in their length limit; the pacing and splitting live here, once.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterable, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Generic, Protocol, TypeVar

H = TypeVar("H")

FENCE = "```"
EMPTY_REPLY = "(The model returned an empty reply.)"
_MIN_LIMIT = 32


class MessageSink(Protocol[H]):
    """Where a platform adapter posts and edits the messages of one reply."""

    async def send(self, text: str) -> H:
        """Post a new message and return a handle to edit it later."""

    async def edit(self, handle: H, text: str) -> None:
        """Replace the text of a message posted by ``send``."""


class EditBudget:
    """Paces edits: each message at most once per interval, all replies within one shared rate.

    One instance is shared by every reply in flight on a platform (a token bucket),
    so ten simultaneous replies do not edit ten times as often as one.  Under load the
    optional updates (``try_take``) thin out first: none is granted while a post that
    must go out (``take``, a reply's final text) is waiting.
    """

    def __init__(
        self,
        per_message_interval: float = 1.0,
        edits_per_second: float = 4.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.per_message_interval = per_message_interval
        self._rate = edits_per_second
        self._capacity = max(1.0, edits_per_second)
        self._tokens = self._capacity
        self._clock = clock
        self._sleep = sleep
        self._updated = clock()
        self._must_waiting = 0

    def try_take(self, last_edit_at: float = -math.inf) -> bool:
        """Take a token if the message's interval has passed, one is free and no must-post waits; never waits."""
        if self._must_waiting or self._clock() - last_edit_at < self.per_message_interval:
            return False
        self._refill()
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    async def take(self) -> None:
        """Take a token, waiting for one (for posts that must happen, like a reply's final text)."""
        self._refill()
        if self._tokens < 1:
            self._must_waiting += 1
            try:
                await self._sleep((1 - self._tokens) / self._rate)
            finally:
                self._must_waiting -= 1
            self._refill()
        # Concurrent waiters may drive the bucket below zero: that debt delays later edits,
        # which keeps the average rate while every must-happen edit still goes out.
        self._tokens -= 1

    def now(self) -> float:
        """The budget's clock."""
        return self._clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + max(0.0, now - self._updated) * self._rate)
        self._updated = now


def split_message(text: str, limit: int) -> list[str]:
    """Split ``text`` into parts of at most ``limit`` characters.

    Cuts prefer a line break, then a space.  A code block that spans a cut is closed
    at the end of one part and reopened (same language tag) at the start of the next.
    """
    if limit < _MIN_LIMIT:
        raise ValueError(f"limit must be at least {_MIN_LIMIT} characters")
    parts: list[str] = []
    rest, reopen = text, ""
    while rest:
        room = limit - len(reopen)
        if len(rest) <= room:
            parts.append(reopen + rest)
            break
        # Leave room for a closing fence in case the cut lands inside a code block.
        cut = _cut_point(rest, room - len(FENCE) - 1)
        piece = reopen + rest[:cut]
        opener = _open_fence(piece)
        if opener is not None:
            piece = piece.rstrip("\n") + "\n" + FENCE
            reopen = opener + "\n"
        else:
            reopen = ""
        parts.append(piece)
        rest = rest[cut:]
    return parts


def _cut_point(text: str, room: int) -> int:
    """Where to cut ``text`` so the first piece has at most ``room`` characters.

    A line break is best.  Elsewhere the rest must not start with a backtick: an inline
    ``` moved to the start of a line would turn into a code fence.
    """
    position = text.rfind("\n", 0, room)
    if position >= room // 2:
        return position + 1
    position = text.rfind(" ", 0, room)
    while position >= room // 2:
        if not _backtick_follows(text, position + 1):
            return position + 1
        position = text.rfind(" ", 0, position)
    cut = room
    while cut > room // 2 and (text[cut - 1] == "`" or _backtick_follows(text, cut)):
        cut -= 1
    return cut


def _backtick_follows(text: str, position: int) -> bool:
    """Whether the next non-blank character from ``position`` on this line is a backtick."""
    return text[position : position + 8].lstrip(" \t").startswith("`")


def _open_fence(text: str) -> str | None:
    """The opening fence line of a code block still open at the end of ``text``."""
    opener = None
    for line in text.splitlines():
        if line.lstrip().startswith(FENCE):
            opener = None if opener is not None else line.strip()
    return opener


async def stream_to_sink(
    chunks: AsyncIterable[str],
    sink: MessageSink[H],
    budget: EditBudget,
    limit: int,
    waiting: AbstractAsyncContextManager[object] | None = None,
) -> list[H]:
    """Show a streamed reply in as few messages as its length needs; return their handles.

    ``waiting`` (a typing indicator) is held until the first non-blank text, which is
    posted at once; later text arrives by edits paced by ``budget``; text beyond
    ``limit`` continues in further messages.  When the stream ends every message holds
    exactly its part of ``split_message(full_text, limit)``.
    """
    view = LiveMessages(sink, budget, limit)
    text = ""
    async with AsyncExitStack() as indicator:
        if waiting is not None:
            await indicator.enter_async_context(waiting)
        async for chunk in chunks:
            text += chunk
            if text.strip():
                await indicator.aclose()
                await view.show(text, final=False)
    await view.show(text if text.strip() else EMPTY_REPLY, final=True)
    return view.handles


class LiveMessages(Generic[H]):
    """What is on screen for one growing text, and the edits that bring it up to date."""

    def __init__(self, sink: MessageSink[H], budget: EditBudget, limit: int) -> None:
        self._sink = sink
        self._budget = budget
        self._limit = limit
        self.handles: list[H] = []
        self._shown: list[str] = []
        self._edited_at: list[float] = []

    async def show(self, text: str, *, final: bool) -> None:
        """Bring the messages up to ``text``.

        While streaming every post and edit is optional: one the budget cannot grant now
        is skipped (later text supersedes it), so a reply that finishes while the budget is
        saturated is posted whole.  The ``final`` call posts everything that is not shown yet.
        """
        for index, part in enumerate(split_message(text, self._limit)):
            if index < len(self.handles) and self._shown[index] == part:
                continue
            if final:
                await self._budget.take()
            elif not self._budget.try_take(self._edited_at[index] if index < len(self.handles) else -math.inf):
                return  # the parts after this one wait for it, to keep their order
            await self._put(index, part)

    async def _put(self, index: int, part: str) -> None:
        if index < len(self.handles):
            await self._sink.edit(self.handles[index], part)
            self._shown[index], self._edited_at[index] = part, self._budget.now()
        else:
            self.handles.append(await self._sink.send(part))
            self._shown.append(part)
            self._edited_at.append(self._budget.now())
