"""The followed threads kept with the history (bot/threads.py), on SQLite and PostgreSQL: shared, and bounded."""

from __future__ import annotations

import pytest

from bot.store import MemoryHistoryStore
from bot.threads import FOLLOW_DAYS, PRUNE_INTERVAL_S, MemoryThreadMap
from bot.types import ConversationKey
from tests.postgres import StoreOpener, open_history, postgres_server, postgres_url  # noqa: F401

DAY_S = 86400.0
CHANNEL_CONVERSATION = ConversationKey("slack", "C1")
THREAD_CONVERSATION = ConversationKey("slack", "C1", "5.0")


class Clock:
    """Seconds since the epoch, moved on by the test."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_a_thread_followed_by_one_process_is_followed_by_another(open_history: StoreOpener) -> None:  # noqa: F811
    first, second = await open_history(), await open_history()
    try:
        await first.threads.follow("slack", "C1", "5.0", THREAD_CONVERSATION)
        await first.threads.follow("slack", "C1", "7.0", CHANNEL_CONVERSATION)  # a /ask thread: the channel's

        assert await second.threads.followed("slack", "C1", "5.0") == THREAD_CONVERSATION
        assert await second.threads.followed("slack", "C1", "7.0") == CHANNEL_CONVERSATION
        assert await second.threads.followed("slack", "C1", "6.0") is None
        assert await second.threads.followed("discord", "C1", "5.0") is None  # keyed by platform too
        await second.threads.follow("slack", "C1", "5.0", CHANNEL_CONVERSATION)  # following again moves it
        assert await first.threads.followed("slack", "C1", "5.0") == CHANNEL_CONVERSATION
    finally:
        await first.close()
        await second.close()


async def test_threads_not_followed_for_a_month_are_forgotten(open_history: StoreOpener) -> None:  # noqa: F811
    clock = Clock()
    store = await open_history(clock=clock)
    try:
        await store.threads.follow("slack", "C1", "old", THREAD_CONVERSATION)
        await store.threads.follow("slack", "C1", "kept", THREAD_CONVERSATION)
        clock.now += (FOLLOW_DAYS - 1) * DAY_S
        await store.threads.follow("slack", "C1", "kept", THREAD_CONVERSATION)  # still in use: refreshed
        clock.now += 2 * DAY_S
        await store.prune()

        assert await store.threads.followed("slack", "C1", "old") is None
        assert await store.threads.followed("slack", "C1", "kept") == THREAD_CONVERSATION
        # A long-running process forgets them too: following any thread prunes, at most hourly.
        clock.now += FOLLOW_DAYS * DAY_S + PRUNE_INTERVAL_S
        await store.threads.follow("slack", "C1", "new", THREAD_CONVERSATION)
        assert await store.threads.followed("slack", "C1", "kept") is None
        assert await store.threads.followed("slack", "C1", "new") == THREAD_CONVERSATION
    finally:
        await store.close()


async def test_followed_threads_survive_a_restart(open_history: StoreOpener) -> None:  # noqa: F811
    store = await open_history()
    await store.threads.follow("slack", "C1", "5.0", THREAD_CONVERSATION)
    await store.close()
    reopened = await open_history()
    try:
        assert await reopened.threads.followed("slack", "C1", "5.0") == THREAD_CONVERSATION
    finally:
        await reopened.close()


async def test_the_memory_map_forgets_the_least_recently_followed_beyond_its_capacity() -> None:
    threads = MemoryThreadMap(capacity=2)
    await threads.follow("slack", "C1", "1.0", THREAD_CONVERSATION)
    await threads.follow("slack", "C1", "2.0", THREAD_CONVERSATION)
    await threads.follow("slack", "C1", "1.0", CHANNEL_CONVERSATION)  # followed again: now the most recent
    await threads.follow("slack", "C1", "3.0", THREAD_CONVERSATION)

    assert await threads.followed("slack", "C1", "2.0") is None
    assert await threads.followed("slack", "C1", "1.0") == CHANNEL_CONVERSATION
    assert await threads.followed("slack", "C1", "3.0") == THREAD_CONVERSATION
    assert isinstance(MemoryHistoryStore().threads, MemoryThreadMap)


@pytest.mark.parametrize("capacity", [0, -1])
def test_the_memory_map_needs_room_for_one_thread(capacity: int) -> None:
    with pytest.raises(ValueError, match="capacity"):
        MemoryThreadMap(capacity=capacity)
