"""Nothing accepted is lost: the inbox answers each platform message once, across stops and restarts."""

from __future__ import annotations

import asyncio

from adapters.memory import MemorySurface
from bot.admin import AdminPolicy, NoAdminActions
from bot.admission import Admission, AdmissionLimits
from bot.commands import ASK_AGAIN, RESTARTED_NOTE, RESTARTING, SEND_AGAIN
from bot.core import Core
from bot.inbox import DONE_KEPT_S, Inbox, SQLiteInbox, Unfinished
from bot.manager import ConversationManager
from bot.store import MemoryHistoryStore
from bot.surface import Kind, Surface
from bot.types import Attachment, ConversationKey, Identity, Incoming
from model.openvino_engine import OpenVINOEngine
from tests.conftest import make_manager
from tests.postgres import (  # noqa: F401
    InboxOpener,
    StoreOpener,
    open_history,
    open_inbox,
    postgres_server,
    postgres_url,
)

KEY = ConversationKey("memory", "general")
AUTHOR = Identity("memory", "tester", frozenset({"role-1"}))


def message(text: str, message_id: str | None) -> Incoming:
    return Incoming(KEY, AUTHOR, text, message_id=message_id)


def core_with(manager: ConversationManager, inbox: Inbox, *, window_s: float = 900.0, grace_s: float = 10.0) -> Core:
    admission = Admission(AdmissionLimits(user_rate=None))
    return Core(
        manager,
        AdminPolicy({}),
        NoAdminActions(),
        grace_s,
        admission,
        inbox=inbox,
        restart_window_s=window_s,
    )


async def test_a_message_is_recorded_once_and_kept_until_done(open_inbox: InboxOpener) -> None:  # noqa: F811
    inbox = await open_inbox()
    first = inbox.accept(message("hello", "m1"), reply_to="general m1")
    assert first is not None
    assert inbox.accept(message("hello", "m1")) is None  # the same platform message again
    assert inbox.accept(message("hello", None), reply_to="general") is not None  # no id: never a duplicate
    await inbox.aclose()
    # A new run finds both; with PostgreSQL it claims them, as the process that recorded them is gone.
    reopened = await open_inbox()
    left = reopened.unfinished("memory")
    assert [item.message.text for item in left] == ["hello", "hello"]
    assert left[0].message.author == AUTHOR and [item.reply_to for item in left] == ["general m1", "general"]
    reopened.done(first)
    await reopened.aclose()
    last = await open_inbox()
    assert [item.reply_to for item in last.unfinished("memory")] == ["general"]
    assert last.unfinished("slack") == []
    assert last.accept(message("hello", "m1")) is None  # de-duplication survives a restart


async def test_finished_rows_are_forgotten_after_a_day(open_inbox: InboxOpener) -> None:  # noqa: F811
    now = [1000.0]
    inbox = await open_inbox(clock=lambda: now[0])
    row = inbox.accept(message("hi", "m1"))
    assert row is not None
    inbox.done(row)
    assert inbox.forget_done() == 0
    now[0] += DONE_KEPT_S + 1
    assert inbox.forget_done() == 1
    assert inbox.accept(message("hi", "m1")) is not None


async def test_a_repeated_delivery_is_answered_once(engine: OpenVINOEngine, open_inbox: InboxOpener) -> None:  # noqa: F811
    core = core_with(make_manager(engine), await open_inbox())
    first, again = MemorySurface(), MemorySurface()
    await asyncio.gather(
        core.submit(message("What is 2 + 2?", "m1"), first, reply_to="r"),
        core.submit(message("What is 2 + 2?", "m1"), again, reply_to="r"),
    )
    assert [post.kind for post in first.posts] == [Kind.REPLY]
    assert again.posts == []


async def test_messages_cut_by_a_stop_are_answered_after_the_restart(
    engine: OpenVINOEngine,
    open_inbox: InboxOpener,  # noqa: F811
) -> None:
    store = MemoryHistoryStore()
    manager = make_manager(engine)
    manager._store = store  # the same history across both runs, as the database would keep it
    first_inbox = await open_inbox()
    before = core_with(manager, first_inbox, grace_s=0.0)
    surfaces = [MemorySurface() for _ in range(3)]
    for number, surface in enumerate(surfaces):
        before.submit(message(f"Question {number}: name a colour.", f"m{number}"), surface, reply_to=f"r{number}")
    await asyncio.sleep(0)
    await before.drain()  # no grace: every reply is cut
    assert all(surface.posts[-1].text == RESTARTING for surface in surfaces)

    await first_inbox.aclose()  # the first run is gone
    after = core_with(manager, await open_inbox())
    answered: dict[str, MemorySurface] = {}

    async def surface_for(left: Unfinished) -> Surface:
        assert left.reply_to is not None
        return answered.setdefault(left.reply_to, MemorySurface())

    assert await after.resume("memory", surface_for) == 3
    await asyncio.wait(set(after._in_flight))
    assert sorted(answered) == ["r0", "r1", "r2"]
    for surface in answered.values():
        assert [post.kind for post in surface.posts] == [Kind.NOTICE, Kind.REPLY]
        assert surface.posts[0].text == RESTARTED_NOTE
    assert await after.resume("memory", surface_for) == 0  # answered once
    questions = [turn for turn in await store.history(KEY, 100) if turn.role == "user"]
    assert len(questions) == 3  # a resumed question is not stored twice


async def test_a_message_too_old_is_told_to_ask_again(engine: OpenVINOEngine) -> None:
    inbox = SQLiteInbox.open(":memory:", clock=lambda: 0.0)  # recorded long ago
    inbox.accept(message("Are you there?", "m1"), reply_to="r")
    core = core_with(make_manager(engine), inbox, window_s=60.0)
    surface = MemorySurface()

    async def surface_for(left: Unfinished) -> Surface:
        return surface

    assert await core.resume("memory", surface_for) == 0
    await asyncio.wait(set(core._in_flight))
    assert [post.text for post in surface.posts] == [ASK_AGAIN]
    assert inbox.unfinished("memory") == []


async def test_a_vanished_place_is_dropped_without_an_answer(engine: OpenVINOEngine) -> None:
    inbox = SQLiteInbox.open(":memory:")
    inbox.accept(message("Hello?", "m1"), reply_to="gone")

    async def surface_for(left: Unfinished) -> Surface | None:
        return None

    core = core_with(make_manager(engine), inbox)
    assert await core.resume("memory", surface_for) == 0
    assert inbox.unfinished("memory") == []


async def test_a_reply_cut_short_is_stored_as_interrupted(engine: OpenVINOEngine, open_history: StoreOpener) -> None:  # noqa: F811
    store = await open_history()
    manager = make_manager(engine)
    manager._store = store
    reply = manager.reply(KEY, "Count from one to fifty.")
    async with reply:
        async for _ in reply:
            break  # the reader went away after the first chunk
    other = ConversationKey("memory", "other")
    whole = manager.reply(other, "Say hi.")
    async with whole:
        await whole.complete()
    cut = [turn async for turn in store.turns(KEY)]
    complete = [turn async for turn in store.turns(other)]
    await store.close()
    assert [(turn.role, turn.interrupted) for turn in cut] == [("user", False), ("assistant", True)]
    assert cut[-1].content == reply.text
    assert [(turn.role, turn.interrupted) for turn in complete] == [("user", False), ("assistant", False)]


async def test_a_message_with_a_file_cut_by_a_crash_is_asked_again(engine: OpenVINOEngine) -> None:
    async def read(limit: int) -> bytes:
        return b"ERROR disk full"

    inbox = SQLiteInbox.open(":memory:")
    first = core_with(make_manager(engine), inbox)
    files = (Attachment("app.log", 15, None, read),)
    stopped = MemorySurface()
    first.submit(Incoming(KEY, AUTHOR, "Why?", message_id="m1", attachments=files), stopped, reply_to="r")
    await first.aclose()  # gone before answering: files are not kept, so it cannot be answered later
    assert [post for post in stopped.posts if post.kind is Kind.REPLY] == []
    surface = MemorySurface()

    async def surface_for(left: Unfinished) -> Surface:
        return surface

    second = core_with(make_manager(engine), inbox)
    assert await second.resume("memory", surface_for) == 0
    await asyncio.wait(set(second._in_flight))
    assert [post.text for post in surface.posts] == [SEND_AGAIN]
    assert inbox.unfinished("memory") == []
