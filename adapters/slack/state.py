"""The little the adapter remembers: the threads it answers (cached here, shared with its other processes)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TypeVar

from adapters.slack.translate import PLATFORM
from bot.threads import ThreadMap, ThreadMapError
from bot.types import ConversationKey

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# The threads answered recently: a few thousand cover the active ones of a busy workspace.
DEFAULT_CAPACITY = 5000
# How often a thread still in use is written again to the shared map, which forgets threads unused for a month.
REFRESH_S = 3600.0
Clock = Callable[[], float]


class BoundedMap(OrderedDict[K, V]):
    """A mapping that forgets its least recently used entries beyond ``capacity``; ``recall`` counts as a use."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        super().__init__()
        self.capacity = capacity

    def recall(self, key: K) -> V | None:
        """The value for ``key`` (marking it recently used), or ``None``."""
        if key in self:
            self.move_to_end(key)
        return self.get(key)

    def __setitem__(self, key: K, value: V) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        if len(self) > self.capacity:
            self.popitem(last=False)


class FollowedThreads(BoundedMap[tuple[str, str], ConversationKey]):
    """Threads the bot answers in, by (channel, thread ts), and the conversation each one continues."""

    def follows(self, channel: str, thread_ts: str) -> bool:
        """Whether the bot answers in this thread."""
        return (channel, thread_ts) in self


class SharedThreads:
    """The followed threads of every process of this app (``bot.threads.ThreadMap``), behind this one's cache.

    ``follows`` and ``recall`` read the cache only (cheap, no await). ``lookup`` asks the shared map on a miss,
    one query per thread at a time: a second message of the thread waits on the first one's query, so the
    two still reach the core in the order they came. ``follow`` writes the shared map when the thread is new
    here, moves to another conversation, or was last written ``REFRESH_S`` ago (keeping it from going stale):
    ``remember`` (at once, no await) then ``share``, or both in ``follow``.
    """

    def __init__(self, shared: ThreadMap, capacity: int = DEFAULT_CAPACITY, clock: Clock = time.monotonic) -> None:
        self._shared = shared
        self._cache = FollowedThreads(capacity)
        self._written: BoundedMap[tuple[str, str], float] = BoundedMap(capacity)
        self._asking: dict[tuple[str, str], asyncio.Future[ConversationKey | None]] = {}
        self._clock = clock

    def follows(self, channel: str, thread_ts: str) -> bool:
        """Whether this process knows the bot answers in this thread."""
        return self._cache.follows(channel, thread_ts)

    def recall(self, channel: str, thread_ts: str) -> ConversationKey | None:
        """The conversation a thread this process knows continues, or ``None``."""
        return self._cache.recall((channel, thread_ts))

    async def lookup(self, channel: str, thread_ts: str) -> ConversationKey | None:
        """The conversation the thread continues, from the cache or (on a miss) the shared map; ``None``: unfollowed.

        Raises ``ThreadMapError`` when the shared map cannot be read.
        """
        thread = (channel, thread_ts)
        known = self._cache.recall(thread)
        if known is not None:
            return known
        asking = self._asking.get(thread)
        if asking is None:
            asking = self._asking[thread] = asyncio.ensure_future(self._ask(thread))
        key = await asyncio.shield(asking)  # one listener cancelled leaves the others their answer
        # Cached by the listeners as they wake, first come first: a message arriving meanwhile asks again
        # rather than find the answer cached and overtake the ones still waking.
        if key is not None:
            self._cache[thread] = key
        return key

    def remember(self, channel: str, thread_ts: str, key: ConversationKey) -> bool:
        """Follow the thread in this process at once, continuing ``key``; whether the shared map is due a ``share``."""
        thread = (channel, thread_ts)
        written = self._written.recall(thread)
        due = written is None or self._clock() - written >= REFRESH_S or self._cache.recall(thread) != key
        self._cache[thread] = key
        return due

    async def share(self, channel: str, thread_ts: str, key: ConversationKey) -> None:
        """Tell the other processes the thread continues ``key``; ``ThreadMapError`` if the map cannot be written."""
        await self._shared.follow(PLATFORM, channel, thread_ts, key)
        self._written[channel, thread_ts] = self._clock()

    async def follow(self, channel: str, thread_ts: str, key: ConversationKey) -> None:
        """``remember`` and, when due, ``share``; a map that cannot be written is logged: this process follows."""
        if self.remember(channel, thread_ts, key):
            try:
                await self.share(channel, thread_ts, key)
            except ThreadMapError as error:
                log.warning("Other bot processes will not follow thread %s in %s: %s", thread_ts, channel, error)

    async def _ask(self, thread: tuple[str, str]) -> ConversationKey | None:
        try:
            return await self._shared.followed(PLATFORM, *thread)
        finally:
            del self._asking[thread]
