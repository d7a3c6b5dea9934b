"""The line for generation slots: at most so many replies generate at once, the rest wait in arrival order.

An engine can write only so many replies at once usefully (one for a single-stream
pipeline, its batch width for a continuous-batching one).  A reply joins the line when
its conversation's turn comes and holds a slot until its stream ends; meanwhile it can
tell its user how many replies will start before it, and learns when that changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Hashable

IN_LINE = "⏳ In line: {ahead} ahead of you."
NEXT_IN_LINE = "⏳ In line: you're next."


def in_line_text(ahead: int) -> str:
    """What a waiting reply shows while ``ahead`` replies will start before it."""
    return NEXT_IN_LINE if ahead == 0 else IN_LINE.format(ahead=ahead)


async def first_of(waits: list[Awaitable[object]], *, limit_s: float | None = None) -> None:
    """Wait until one of ``waits`` is done, or ``limit_s`` seconds have passed; the others are cancelled."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, timeout=limit_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


class Changes:
    """A broadcast: what ``wait`` returns is done at the next ``notify`` after the call."""

    def __init__(self) -> None:
        self._next = asyncio.Event()

    def notify(self) -> None:
        """Wake everyone waiting now; later waiters wait for the next change."""
        self._next.set()
        self._next = asyncio.Event()

    def wait(self) -> Awaitable[object]:
        """Something to await for the next ``notify``.

        The change it waits for is the next one after this call, however late it is awaited
        (a task that runs it later misses nothing).
        """
        return self._next.wait()


class Ticket:
    """One reply's place in the line for a slot; ``release`` it on every path (``async with`` does)."""

    def __init__(self, lineup: Lineup, key: Hashable) -> None:
        self._lineup = lineup
        self.key = key
        self._granted = asyncio.Event()

    @property
    def holding(self) -> bool:
        """Whether it holds a slot now."""
        return self in self._lineup._holding

    @property
    def waiting(self) -> bool:
        """Whether it still waits for a slot."""
        return self in self._lineup._queue

    @property
    def ahead(self) -> int:
        """How many tickets get a slot before this one (0 once it holds one or has left)."""
        queue = self._lineup._queue
        return queue.index(self) if self in queue else 0

    async def acquire(self) -> None:
        """Wait until it holds a slot; cancelled, it leaves the line (or gives back the slot it just got)."""
        try:
            await self._granted.wait()
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Leave the line or give back the slot; safe to call more than once."""
        self._lineup._release(self)

    async def __aenter__(self) -> Ticket:
        await self.acquire()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()


class Lineup:
    """A FIFO gate: ``capacity`` tickets hold a slot at once, the others wait in the order they joined."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("a lineup needs at least one slot")
        self.capacity = capacity
        self._holding: set[Ticket] = set()
        # A list, not a deque: positions are read by index, and the line stays short (it is bounded by admission).
        self._queue: list[Ticket] = []
        self._changes = Changes()

    @property
    def generating(self) -> int:
        """How many tickets hold a slot now."""
        return len(self._holding)

    @property
    def waiting(self) -> int:
        """How many tickets wait for a slot now."""
        return len(self._queue)

    def waiting_except(self, key: Hashable) -> int:
        """How many tickets of other keys than ``key`` wait for a slot now."""
        return sum(1 for ticket in self._queue if ticket.key != key)

    def join(self, key: Hashable = None) -> Ticket:
        """Join the end of the line now (never awaits); the ticket holds a slot at once if one is free."""
        ticket = Ticket(self, key)
        self._queue.append(ticket)
        self._grant()
        self._changes.notify()
        return ticket

    def changed(self) -> Awaitable[object]:
        """Something to await for the next change of the line or the holders, after this call."""
        return self._changes.wait()

    def _release(self, ticket: Ticket) -> None:
        if ticket in self._holding:
            self._holding.discard(ticket)
        elif ticket in self._queue:
            self._queue.remove(ticket)
        else:
            return
        self._grant()
        self._changes.notify()

    def _grant(self) -> None:
        while self._queue and len(self._holding) < self.capacity:
            ticket = self._queue.pop(0)
            self._holding.add(ticket)
            ticket._granted.set()
