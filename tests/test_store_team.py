"""The history store's team data (SQLite and PostgreSQL): authors, a channel's persona and feedback, across reopens."""

from __future__ import annotations

from pathlib import Path

from bot.channel_store import Feedback
from bot.store import SQLiteHistoryStore
from bot.types import ConversationKey
from model.engine import ChatMessage
from tests.postgres import StoreOpener, open_history, postgres_server, postgres_url  # noqa: F401
from tests.test_store_retention import A, write_v1_database

THREAD = ConversationKey("slack", "C1", "111.222")
CHANNEL = ConversationKey("slack", "C1")
OTHER = ConversationKey("slack", "C2")


async def test_authors_personas_and_feedback_survive_a_restart(open_history: StoreOpener) -> None:  # noqa: F811
    store = await open_history()
    await store.append(THREAD, ChatMessage("user", "Ship Friday?", "Alice", "slack:U1"))
    await store.append(THREAD, ChatMessage("assistant", "Sounds good."))
    await store.set_persona(THREAD, "Answer in French.", "slack:UADMIN")
    await store.record_feedback(THREAD, "111.333", "U1", helpful=True)
    await store.record_feedback(CHANNEL, "111.444", "U1", helpful=False)
    await store.record_feedback(OTHER, "9.9", "U1", helpful=True)
    await store.record_feedback(CHANNEL, "111.444", "U1", helpful=True)  # changed their mind
    await store.close()

    store = await open_history()
    try:
        assert await store.history(THREAD, 10) == [
            ChatMessage("user", "Ship Friday?", "Alice", "slack:U1"),
            ChatMessage("assistant", "Sounds good."),
        ]
        # A persona and feedback belong to the channel, its threads included.
        assert await store.persona(CHANNEL) == "Answer in French."
        assert await store.persona(OTHER) is None
        assert await store.feedback(THREAD) == Feedback(helpful=2, unhelpful=0)
        await store.set_persona(CHANNEL, None, "slack:UADMIN")
        assert await store.persona(THREAD) is None
    finally:
        await store.close()


async def test_turns_stored_before_authors_were_kept_stay_unnamed(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    write_v1_database(path)
    store = await SQLiteHistoryStore.open(path)
    try:
        assert [(turn.name, turn.speaker) for turn in await store.history(A, 10)] == [(None, None)] * 2
        assert await store.feedback(A) == Feedback()
    finally:
        await store.close()
