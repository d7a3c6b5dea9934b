"""The history store (SQLite and PostgreSQL): retention by turns and by age, interrupted turns, SQLite migrations."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bot.storage import AdminHistoryStore
from bot.store import (
    AGE_PRUNE_INTERVAL_S,
    SCHEMA_VERSION,
    HistoryStoreError,
    MemoryHistoryStore,
    Retention,
    SQLiteHistoryStore,
    StoredTurn,
)
from bot.types import ConversationKey
from model.engine import ChatMessage
from tests.postgres import StoreOpener, open_history, postgres_server, postgres_url  # noqa: F401

A = ConversationKey("slack", "C1")
B = ConversationKey("slack", "C1", "1700000000.000100")
DAY = 86400.0
START = 1_700_000_000.0

# The schema as version 1 of the bot wrote it, verbatim.
V1_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    platform TEXT NOT NULL,
    channel TEXT NOT NULL,
    thread TEXT NOT NULL DEFAULT '',
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages (platform, channel, thread, id);
PRAGMA user_version = 1;
"""


class Clock:
    """A settable clock: retention by age is tested with explicit timestamps, never by sleeping."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def say(store: AdminHistoryStore, key: ConversationKey, *texts: str) -> None:
    for text in texts:
        await store.append(key, ChatMessage("user", text))


async def contents(store: AdminHistoryStore, key: ConversationKey) -> list[str]:
    return [message.content for message in await store.history(key, 10_000)]


async def test_each_conversation_keeps_its_newest_turns(open_history: StoreOpener) -> None:  # noqa: F811
    store = await open_history(retention=Retention(max_turns=3))
    try:
        await say(store, A, "1", "2", "3", "4", "5")
        await say(store, B, "b1", "b2")
        assert await contents(store, A) == ["3", "4", "5"]
        assert await contents(store, B) == ["b1", "b2"]  # a thread is a conversation of its own
    finally:
        await store.close()


async def test_opening_applies_the_retention_to_what_is_stored(open_history: StoreOpener) -> None:  # noqa: F811
    clock = Clock()
    unbounded = await open_history(clock=clock)
    await say(unbounded, A, "old")
    clock.now += 10 * DAY
    await say(unbounded, A, "1", "2")
    await say(unbounded, B, "b1", "b2", "b3", "b4")
    await unbounded.close()

    store = await open_history(retention=Retention(max_turns=3, max_age_days=5), clock=clock)
    try:
        assert await contents(store, A) == ["1", "2"]  # within the turn limit, but "old" was too old
        assert await contents(store, B) == ["b2", "b3", "b4"]
    finally:
        await store.close()


async def test_age_pruning_on_append_runs_at_most_hourly_and_prune_applies_it_now(open_history: StoreOpener) -> None:  # noqa: F811
    clock = Clock()
    retention = Retention(max_age_days=600 / DAY)  # ten minutes
    store = await open_history(retention=retention, clock=clock)
    try:
        await say(store, A, "first")
        clock.now += 20 * 60  # "first" is too old now, but the last age pruning (at open) was 20 minutes ago
        await say(store, B, "second")
        assert await contents(store, A) == ["first"]
        assert await store.prune(dry_run=True) == 1
        assert await contents(store, A) == ["first"]
        assert await store.prune() == 1
        assert await contents(store, A) == []
        clock.now += AGE_PRUNE_INTERVAL_S  # an hour after that pruning, an append prunes by age again
        await say(store, A, "third")
        assert await contents(store, B) == []
        assert await contents(store, A) == ["third"]
    finally:
        await store.close()


async def test_prune_counts_a_turn_that_is_both_too_old_and_over_the_limit_once(open_history: StoreOpener) -> None:  # noqa: F811
    clock = Clock()
    unbounded = await open_history(clock=clock)
    await say(unbounded, A, "old 1", "old 2")
    clock.now += 3 * DAY
    await say(unbounded, A, "new 1", "new 2")
    await unbounded.close()

    store = await open_history(retention=Retention(max_turns=2, max_age_days=1), clock=clock, prune=False)
    try:
        assert await store.prune(dry_run=True) == 2
        assert await contents(store, A) == ["old 1", "old 2", "new 1", "new 2"]
        assert await store.prune() == 2
        assert await contents(store, A) == ["new 1", "new 2"]
        assert await store.prune() == 0
    finally:
        await store.close()


async def test_an_interrupted_reply_is_kept_as_such_and_still_in_the_history(open_history: StoreOpener) -> None:  # noqa: F811
    clock = Clock()
    store = await open_history(clock=clock)
    try:
        await store.append(B, ChatMessage("user", "Tell me a story."))
        clock.now += 2
        await store.append(B, ChatMessage("assistant", "Once upon a"), interrupted=True)
        assert await store.history(B, 10) == [
            ChatMessage("user", "Tell me a story."),
            ChatMessage("assistant", "Once upon a"),
        ]
        assert [turn async for turn in store.turns(B)] == [
            StoredTurn("user", "Tell me a story.", START, interrupted=False),
            StoredTurn("assistant", "Once upon a", START + 2, interrupted=True),
        ]
        [summary] = await store.conversations()
        assert (summary.key, summary.turns, summary.last_activity) == (B, 2, START + 2)
        assert await store.count(B) == 2 and await store.count(A) == 0
    finally:
        await store.close()


def write_v1_database(path: Path) -> None:
    """A history file as version 1 left it, beside another part's table that must survive."""
    with sqlite3.connect(path) as db:
        db.executescript(V1_SCHEMA)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE inbox (message_id TEXT PRIMARY KEY, state TEXT)")
        db.execute("INSERT INTO inbox VALUES ('m1', 'waiting')")
        rows = [("slack", "C1", "", "user", "Hi", START), ("slack", "C1", "", "assistant", "Hello!", START + 1)]
        db.executemany(
            "INSERT INTO messages (platform, channel, thread, role, content, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
    db.close()


async def test_a_version_1_database_is_migrated_in_place_keeping_every_row(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    write_v1_database(path)
    store = await SQLiteHistoryStore.open(path, retention=Retention(max_turns=1000, max_age_days=None))
    try:
        assert [turn async for turn in store.turns(A)] == [
            StoredTurn("user", "Hi", START, interrupted=False),
            StoredTurn("assistant", "Hello!", START + 1, interrupted=False),
        ]
        await store.append(A, ChatMessage("assistant", "cut"), interrupted=True)
        assert [turn.interrupted async for turn in store.turns(A)] == [False, False, True]
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("SELECT * FROM inbox").fetchall() == [("m1", "waiting")]
    db.close()


async def test_reopening_a_migrated_database_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    write_v1_database(path)
    for _ in range(2):
        store = await SQLiteHistoryStore.open(path)
        assert await contents(store, A) == ["Hi", "Hello!"]
        await store.close()


async def test_a_database_from_a_newer_bot_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(HistoryStoreError, match="newer than this bot"):
        await SQLiteHistoryStore.open(path)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION + 1,)
    db.close()


@pytest.mark.parametrize(("turns", "days"), [(0, None), (None, 0.0), (None, -1.0)])
def test_retention_bounds_must_be_positive(turns: int | None, days: float | None) -> None:
    with pytest.raises(ValueError, match="must be"):
        Retention(max_turns=turns, max_age_days=days)


async def test_the_memory_store_takes_interrupted_turns_too() -> None:
    store = MemoryHistoryStore()
    await store.append(A, ChatMessage("assistant", "Once upon a"), interrupted=True)
    assert await store.history(A, 5) == [ChatMessage("assistant", "Once upon a")]
