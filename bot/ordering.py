"""Answering each conversation's messages in the order they arrived."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Hashable

from bot.lineup import Changes


class Place:
    """One message's place in its conversation's line."""

    def __init__(self, line: ArrivalOrder, key: Hashable) -> None:
        self._line = line
        self.key = key
        self.turn = asyncio.Event()

    async def wait(self) -> None:
        """Wait until every message that arrived earlier in this conversation is done."""
        await self.turn.wait()

    @property
    def ahead(self) -> int:
        """How many places of this conversation come before this one (0 once it has its turn or left)."""
        return self._line._ahead(self)

    def moved(self) -> Awaitable[object]:
        """Something to await until a place leaves any line after this call (so ``ahead`` may have changed)."""
        return self._line._changes.wait()

    def leave(self) -> None:
        """Give up the place (served, abandoned or cancelled); safe to call more than once."""
        self._line._leave(self)


class ArrivalOrder:
    """Per-conversation FIFO lines: a place is taken when a message arrives, not when it is served.

    Taking a place never awaits, so an adapter that does network I/O (a typing
    indicator, a deferred response) between receiving a message and reading the
    reply cannot let a later message overtake it.  Lines of idle conversations are
    dropped, so memory follows the conversations in flight, not all ever seen.
    """

    def __init__(self) -> None:
        self._lines: dict[Hashable, deque[Place]] = {}
        self._changes = Changes()

    def take_place(self, key: Hashable) -> Place:
        """Join the end of ``key``'s line."""
        place = Place(self, key)
        line = self._lines.setdefault(key, deque())
        line.append(place)
        if len(line) == 1:
            place.turn.set()
        return place

    def waiting(self, key: Hashable) -> int:
        """How many places ``key``'s line holds now."""
        return len(self._lines.get(key, ()))

    def _ahead(self, place: Place) -> int:
        line = self._lines.get(place.key, ())
        return line.index(place) if place in line else 0

    def _leave(self, place: Place) -> None:
        line = self._lines.get(place.key)
        if line is None or place not in line:
            return
        was_first = line[0] is place
        line.remove(place)
        if not line:
            del self._lines[place.key]
        elif was_first:
            line[0].turn.set()
        self._changes.notify()
