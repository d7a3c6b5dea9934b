"""One answer being generated (``Reply``) and a reset waiting for its turn (``PendingReset``).

Both hold their conversation's place in line from creation; ``bot.manager.ConversationManager`` makes them
and does the work.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Generator
from typing import TYPE_CHECKING, Any

from bot.lineup import Lineup, Ticket, first_of
from bot.ordering import Place
from bot.types import Attachment, ConversationKey, Said
from model.engine import ReplyStats

if TYPE_CHECKING:
    from bot.manager import ConversationManager


class Reply:
    """One answer being generated, used as ``async with manager.reply(key, text) as reply``.

    Iterate it (once) for text chunks.  Afterwards ``text`` holds the whole reply,
    ``stats`` its measurements and ``notices`` anything the user should be told (for
    example that their message was cut).  Its place in the conversation's line is taken
    on creation and given back by ``aclose`` (which leaving the ``async with`` block
    calls) on every path: served, failed, cancelled or never iterated.  Inside ``async with``
    the place is held until the block ends, so whatever its owner shows after the last
    chunk (notices, a failure) comes before the conversation's next answer; a reply only
    iterated gives its place back when its chunks end.

    With a ``lineup`` it also waits, once its turn has come, for a generation slot, held
    until its chunks end; ``ahead`` and ``moved`` tell how many replies start before it.
    """

    def __init__(
        self,
        manager: ConversationManager,
        key: ConversationKey,
        text: str,
        place: Place,
        time_limit_s: float | None,
        lineup: Lineup | None = None,
    ) -> None:
        self._manager = manager
        self.key = key
        self.prompt_text = text
        self.place = place
        self.time_limit_s = time_limit_s
        self.deadline = None if time_limit_s is None else asyncio.get_running_loop().time() + time_limit_s
        self.text = ""
        self.stats: ReplyStats | None = None
        self.notices: list[str] = []
        self.generating_s: float | None = None  # how long it held its slot, once its chunks ended
        self.author: str | None = None  # the asker's display name, kept with their turn
        self.speaker: str | None = None  # who the asker is (platform and id), never shown
        self.attachments: tuple[Attachment, ...] = ()  # files read into the asker's turn before it is stored
        self.context: tuple[Said, ...] = ()  # a discussion asked about: the prompt is it, not the history
        self.row: int | None = None  # the message's inbox row, which orders it across bot processes
        # Answering again after a restart: the user's turn may be stored already.
        self.resumed = False
        # Cut short (failed, stopped, past its deadline): stored as interrupted, not as a complete answer.
        self.interrupted = False
        self._chunks: AsyncGenerator[str] | None = None
        self._held = False
        self._lineup = lineup
        self._ticket: Ticket | None = None

    async def __aenter__(self) -> Reply:
        self._held = True
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncGenerator[str]:
        if self._chunks is not None:
            raise RuntimeError("a Reply can be iterated only once")
        self._chunks = self._manager._run(self)
        return self._chunks

    async def complete(self) -> str:
        """Consume the whole reply and return its text."""
        async for _ in self:
            pass
        return self.text

    async def aclose(self) -> None:
        """Stop generating (if it started) and give the place in line back; safe to call more than once."""
        try:
            if self._chunks is not None:
                await self._chunks.aclose()
        finally:
            self.place.leave()
            if self._ticket is not None:
                self._ticket.release()

    def ahead(self) -> int | None:
        """How many replies will start generating before this one; ``None`` once it generates (or has ended).

        Behind earlier messages of its own conversation it counts those, plus every reply of other
        conversations already waiting for a slot: all of them start first.
        """
        if self._ticket is not None:
            return self._ticket.ahead if self._ticket.waiting else None
        if self._lineup is None:
            return None if self.place.turn.is_set() else self.place.ahead
        return self.place.ahead + self._lineup.waiting_except(self.key)

    def moved(self) -> Awaitable[None]:
        """Something to await until ``ahead`` may have changed after this call."""
        waits = [self.place.moved()]
        if self._lineup is not None:
            waits.append(self._lineup.changed())
        return first_of(waits)

    @contextlib.asynccontextmanager
    async def _generating(self) -> AsyncIterator[None]:
        """Hold a generation slot (with a lineup) for the block, and time it."""
        if self._lineup is not None:
            self._ticket = self._lineup.join(self.key)
        loop = asyncio.get_running_loop()
        started: float | None = None
        try:
            if self._ticket is not None:
                await self._ticket.acquire()
            started = loop.time()
            yield
        finally:
            if self._ticket is not None:
                self._ticket.release()
            if started is not None:
                self.generating_s = loop.time() - started


class PendingReset:
    """A reset waiting for its turn; await it for the number of turns removed (its place is already taken)."""

    def __init__(self, manager: ConversationManager, key: ConversationKey, place: Place, row: int | None) -> None:
        self._manager = manager
        self.key = key
        self.place = place
        self.row = row

    def __await__(self) -> Generator[Any, None, int]:
        return self._manager._reset(self.key, self.place, self.row).__await__()
