"""The little the adapter remembers: recently seen events and the threads it answers."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

from bot.types import ConversationKey

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# Slack retries an event for a few minutes at most; a few thousand ids cover far more than that.
DEFAULT_CAPACITY = 5000


class BoundedMap(Generic[K, V]):
    """A mapping that forgets its least recently used entries beyond ``capacity``."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        """The value for ``key`` (marking it recently used), or ``None``."""
        if key not in self._items:
            return None
        self._items.move_to_end(key)
        return self._items[key]

    def put(self, key: K, value: V) -> None:
        """Remember ``value`` for ``key``, forgetting the oldest entry if full."""
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self._capacity:
            self._items.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)


class SeenEvents:
    """Answers each Slack message once, however many events or retries deliver it."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._seen: BoundedMap[str, bool] = BoundedMap(capacity)

    def first_time(self, *ids: str | None) -> bool:
        """Record ``ids``; true only if none of them was seen before."""
        present = [item for item in ids if item]
        fresh = not any(item in self._seen for item in present)
        for item in present:
            self._seen.put(item, True)
        return fresh


class FollowedThreads:
    """Threads the bot answers in, and the conversation each one continues."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._threads: BoundedMap[tuple[str, str], ConversationKey] = BoundedMap(capacity)

    def follow(self, channel: str, thread_ts: str, key: ConversationKey) -> None:
        """Answer later messages in this thread, as part of conversation ``key``."""
        self._threads.put((channel, thread_ts), key)

    def key_for(self, channel: str, thread_ts: str) -> ConversationKey | None:
        """The conversation a followed thread continues, or ``None`` if the bot does not follow it."""
        return self._threads.get((channel, thread_ts))

    def follows(self, channel: str, thread_ts: str) -> bool:
        """Whether the bot answers in this thread."""
        return (channel, thread_ts) in self._threads
