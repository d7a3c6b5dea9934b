"""The little the adapter remembers: the threads it answers."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import TypeVar

from bot.types import ConversationKey

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# The threads answered recently: a few thousand cover the active ones of a busy workspace.
DEFAULT_CAPACITY = 5000


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
