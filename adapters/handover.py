"""Handing messages to the core in arrival order, while each is prepared (names looked up, a thread read) first.

``Core.submit`` takes a message's place in its conversation when it is called; an adapter that must await
something before it can build the message would let a later, quicker message of the same conversation
overtake it.  Every adapter that awaits before submitting uses this one hand-over.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Hashable
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


class HandOver:
    """Hands messages to the core in the order they arrived per conversation, while their names are looked up.

    Each message's preparation (name lookups, a thread read) starts at once and runs beside the others';
    only the hand-over waits, in a FIFO lock per conversation, so a slow lookup never lets a later
    message of the same conversation overtake it, and other conversations never wait on it.
    """

    def __init__(self) -> None:
        self._locks: dict[Hashable, asyncio.Lock] = {}
        self._users: Counter[Hashable] = Counter()

    async def hand_over(self, key: Hashable, prepare: Awaitable[T], then: Callable[[T], R]) -> R:
        """Run ``prepare`` now, then ``then(prepared)`` after every earlier message of ``key`` was handed over."""
        # Started before any await: arrival order is the order of these calls.
        preparing = asyncio.ensure_future(prepare)
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] += 1
        try:
            async with lock:  # asyncio.Lock wakes its waiters first come, first served
                return then(await preparing)
        finally:
            preparing.cancel()  # only if this call was cancelled before it finished
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key], self._locks[key]
