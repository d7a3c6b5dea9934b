"""Streaming a reply into chat messages: post early, edit under a rate budget, split long text.

Platforms differ only in how a message is posted and edited (a ``MessageSink``) and
in their length limit; the pacing and splitting live here, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterable, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Generic, Protocol, TypeVar

from bot.lineup import first_of, in_line_text

log = logging.getLogger(__name__)

H = TypeVar("H")

FENCE = "```"
EMPTY_REPLY = "(The model returned an empty reply.)"
# What an in-line message becomes when its reply failed or was stopped before any text (the reason follows apart).
NO_REPLY = "(No reply.)"
# What follows the text of a reply cut short (the engine failed, the bot stopped), so nobody takes it as complete.
INTERRUPTED_MARK = "\n\n_(reply interrupted)_"
# How long a cut reply may spend showing its mark: a stop must not wait on a platform that does not answer.
MARK_TIMEOUT_S = 10.0
# A wait shorter than this shows nothing: a message that is replaced at once is only noise.
IN_LINE_AFTER_S = 1.0
# After an update failed (past the client's own retries), the next optional one waits this long: a platform
# that keeps failing must not slow the reply down by a full round of retries for every chunk.
FAILED_UPDATE_PAUSE_S = 5.0
# How soon an in-line update the edit budget refused is tried again.
IN_LINE_RETRY_S = 0.5
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


class Queued(Protocol):
    """A reply that may wait before it generates (its conversation's turn, a generation slot)."""

    def ahead(self) -> int | None:
        """How many replies start before it; ``None`` once it generates."""

    def moved(self) -> Awaitable[object]:
        """Something to await until ``ahead`` may have changed after this call."""


async def stream_to_sink(
    chunks: AsyncIterable[str],
    sink: MessageSink[H],
    budget: EditBudget,
    limit: int,
    waiting: AbstractAsyncContextManager[object] | None = None,
    queued: Queued | None = None,
) -> list[H]:
    """Show a streamed reply in as few messages as its length needs; return their handles.

    While ``queued`` waits longer than a moment, one message shows its place in line;
    ``waiting`` (a typing indicator) is held once it generates, until the first non-blank
    text.  That text is posted at once (over the in-line message, if any); later text
    arrives by edits paced by ``budget``; text beyond ``limit`` continues in further
    messages.  When the stream ends every message holds exactly its part of
    ``split_message(full_text, limit)``; an in-line message never stays on screen.

    Only the final text must arrive: a failed post or edit before it is logged and
    skipped, and the final text's failure propagates.  A stream that ends by an
    exception or a cancellation shows the text so far followed by ``INTERRUPTED_MARK``
    (``NO_REPLY`` over an in-line message when there was no text yet), then re-raises.
    """
    view = LiveMessages(sink, budget, limit)
    text = ""
    before_text = BeforeText(view, queued, waiting)
    try:
        async with before_text:
            async for chunk in chunks:
                text += chunk
                if text.strip():
                    await before_text.end()
                    await view.show(text, final=False)
    except BaseException:
        cut = interrupted(text) if text.strip() else NO_REPLY if before_text.left_on_screen() else None
        if cut is not None:
            # The failure being raised matters more than one showing it; a stop waits for it only so long.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(MARK_TIMEOUT_S):
                    await view.show(cut, final=True)
        raise
    await view.show(text if text.strip() else EMPTY_REPLY, final=True)
    return view.handles


def interrupted(text: str) -> str:
    """``text`` of a reply cut short, with ``INTERRUPTED_MARK`` after it (outside any code block left open)."""
    body = text.rstrip()
    if _open_fence(body) is not None:
        body += "\n" + FENCE
    return body + INTERRUPTED_MARK


class BeforeText(Generic[H]):
    """What a reply shows before its first text: its place in line while it waits, the indicator while it generates.

    Runs beside the stream in a task of its own, since the stream shows nothing until its
    first chunk; ``end`` stops it (the indicator is exited in the task that entered it).
    """

    def __init__(
        self, view: LiveMessages[H], queued: Queued | None, indicator: AbstractAsyncContextManager[object] | None
    ) -> None:
        self._view = view
        self._queued = queued
        self._indicator = indicator
        self._ended = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._placed: str | None = None  # the in-line text last put on screen

    async def __aenter__(self) -> BeforeText[H]:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.end()

    async def end(self) -> None:
        """Stop showing the wait (the reply's text takes over); safe to call more than once."""
        self._ended.set()
        task, self._task = self._task, None
        if task is not None:
            await task  # an in-line post under way finishes first, so its message is known and replaced

    def left_on_screen(self) -> bool:
        """Whether the in-line message is still what the reply's first message shows."""
        return self._placed is not None and self._view.showing(self._placed)

    async def _run(self) -> None:
        if self._queued is not None:
            await self._show_place(self._queued)
        if self._indicator is not None and not self._ended.is_set():
            async with self._indicator:
                await self._ended.wait()

    async def _show_place(self, queued: Queued) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + IN_LINE_AFTER_S
        while not self._ended.is_set() and (ahead := queued.ahead()) is not None:
            limit_s: float | None = due - loop.time()
            if limit_s is not None and limit_s <= 0:
                limit_s = None if await self._put_place(in_line_text(ahead)) else IN_LINE_RETRY_S
            await first_of([queued.moved(), self._ended.wait()], limit_s=limit_s)

    async def _put_place(self, text: str) -> bool:
        # The first post should happen soon (a slash command left unanswered for seconds is dropped); updates
        # are optional.  Neither is the reply: one that failed is tried again and never stops the reply.
        try:
            shown = await self._view.show(text, final=self._placed is None)
        except Exception as error:
            log.warning("Could not show a reply's place in line: %s", error)
            return False
        if shown:
            self._placed = text
        return shown


class LiveMessages(Generic[H]):
    """What is on screen for one growing text, and the edits that bring it up to date."""

    def __init__(self, sink: MessageSink[H], budget: EditBudget, limit: int) -> None:
        self._sink = sink
        self._budget = budget
        self._limit = limit
        self.handles: list[H] = []
        self._shown: list[str] = []
        self._edited_at: list[float] = []
        self._paused_until = -math.inf  # no optional update before this time (one failed)

    async def show(self, text: str, *, final: bool) -> bool:
        """Bring the messages up to ``text``; return whether they show it all now.

        While streaming every post and edit is optional: one the budget cannot grant now
        is skipped (later text supersedes it), so a reply that finishes while the budget is
        saturated is posted whole; one that fails is logged and skipped too.  The ``final``
        call posts everything that is not shown yet; a part whose edit fails then is posted
        anew (with the parts after it), and only a failure of that propagates.
        """
        if not final and self._budget.now() < self._paused_until:
            return False
        for index, part in enumerate(split_message(text, self._limit)):
            if index < len(self.handles) and self._shown[index] == part:
                continue
            if final:
                await self._budget.take()
                await self._put_final(index, part)
                continue
            if not self._budget.try_take(self._edited_at[index] if index < len(self.handles) else -math.inf):
                return False  # the parts after this one wait for it, to keep their order
            try:
                await self._put(index, part)
            except Exception as error:  # after the client's own retries: later text supersedes this one
                log.warning("Could not update a message (it catches up later): %s", error)
                self._paused_until = self._budget.now() + FAILED_UPDATE_PAUSE_S
                return False
        return True

    def showing(self, text: str) -> bool:
        """Whether the messages show exactly ``text`` now."""
        return self._shown == split_message(text, self._limit)

    async def _put_final(self, index: int, part: str) -> None:
        if index >= len(self.handles):
            await self._put(index, part)
            return
        try:
            await self._sink.edit(self.handles[index], part)
        except Exception as error:
            # The message keeps its older text; the whole of it arrives in new messages from here on.
            log.warning("Could not edit a message into its final text, posting it anew: %s", error)
            del self.handles[index:], self._shown[index:], self._edited_at[index:]
            await self._put(index, part)
        else:
            self._shown[index], self._edited_at[index] = part, self._budget.now()

    async def _put(self, index: int, part: str) -> None:
        if index < len(self.handles):
            await self._sink.edit(self.handles[index], part)
            self._shown[index], self._edited_at[index] = part, self._budget.now()
        else:
            self.handles.append(await self._sink.send(part))
            self._shown.append(part)
            self._edited_at.append(self._budget.now())
